"""pinedge.control"""
