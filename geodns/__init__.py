"""pinedge.geodns"""
