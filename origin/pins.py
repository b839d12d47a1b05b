"""Seed data: who pinned which photo to which board, and what they wrote.

`derive()` turns the photo list into a fixed list of pins, so every origin
started from the same photos serves the same pins with the same ids.
"""

from __future__ import annotations

TARGET_PINS = 36

USERS = {"ada": "Ada K.", "bram": "Bram V.", "chidi": "Chidi O."}

# board id: (title, owner)
BOARDS = {
    "science": ("Science & space", "ada"),
    "home": ("Home & kitchen", "bram"),
    "people-places": ("People & places", "chidi"),
    "shapes": ("Shapes & motion", "ada"),
}

# photo: boards it is pinned to, in turn
PLACES = {
    "The_Poppet.jpg": ["home", "people-places"],
    "Cerkiew.jpg": ["people-places", "home"],
    "Giunchedi_Filippo_January_2015_01-cmyk.jpg": ["people-places"],
    "horse.png": ["shapes", "home"],
    "retina.jpg": ["science", "shapes"],
    "coffee.png": ["home", "people-places"],
    "astronaut.png": ["science", "people-places"],
    "hubble_deep_field.jpg": ["science", "shapes"],
    "alpha-premultiply-2048x1536-paper.png": ["shapes", "home"],
    "rotating-squares.gif": ["shapes"],
    "Rotating_earth_large.gif": ["science", "shapes"],
}

# photo: (title, description) for its first, second, third … pin
CAPTIONS = {
    "The_Poppet.jpg": [
        ("The Poppet baby bath", "A 1950s baby bath that hooks over the big tub. Ducks included."),
        ("Bath time, 1950s style", "Parents of the 1950s knelt less."),
        ("Nursery restoration idea", "A steel frame and a sling, over the family tub."),
        ("Mid-century design", "Tubular steel at its most practical."),
    ],
    "Cerkiew.jpg": [
        ("White church, green trees", "A cerkiew at the end of a path on a summer afternoon."),
        ("Bell tower study", "Plain walls, red roofs, an onion dome on top."),
        ("Road trip stop", "Worth the detour."),
        ("Sacred architecture", "Symmetry from the gate to the cross."),
    ],
    "Giunchedi_Filippo_January_2015_01-cmyk.jpg": [
        ("Portrait against green", "Soft light, shallow depth of field, leaves behind."),
        ("Headshot lighting", "Natural-looking light: a reference for team photos."),
        ("Team page portraits", "Simple and friendly: what a staff photo should be."),
        ("CMYK JPEG in the wild", "Printed-colour JPEG; browsers still show it."),
    ],
    "horse.png": [
        ("Horse silhouette", "Clean vector-style outline on a transparent background."),
        ("Wall decal idea", "Black horse over the fireplace."),
        ("Stencil for a T-shirt", "Cut it out, spray it, done."),
        ("Shape reference", "Good test for edge detection."),
    ],
    "retina.jpg": [
        ("The back of an eye", "A fundus photograph: the retina with its vessels and optic disc."),
        ("Looks like a planet", "Red planet? No: a human retina."),
        ("Biology class poster", "Where the blood vessels meet the optic nerve."),
        ("Circles in nature", "A disc within a disc."),
    ],
    "coffee.png": [
        ("Espresso, red cup", "A short one on a wooden table, crema and all."),
        ("Café mornings", "The corner café that does the red cups."),
        ("Red and wood", "Colour palette: brick red, walnut, cream."),
        ("Coffee break", "Five minutes, no phone."),
    ],
    "astronaut.png": [
        ("Astronaut portrait", "Eileen Collins in an orange flight suit: a NASA portrait."),
        ("First woman to pilot the Shuttle", "Later the first woman to command it."),
        ("Orange suit, flag, shuttle model", "The classic NASA portrait layout."),
        ("Space heroes", "For the classroom wall."),
    ],
    "hubble_deep_field.jpg": [
        ("Hubble Deep Field", "Almost every dot here is a galaxy."),
        ("Wallpaper: deep field", "Dark, busy, endlessly zoomable."),
        ("Dots and colours", "Pattern inspiration from the far universe."),
        ("Looking back in time", "Light that left these galaxies billions of years ago."),
    ],
    "alpha-premultiply-2048x1536-paper.png": [
        ("Paint strokes", "Circles, scribbles and a triangle on transparent paper."),
        ("Brush texture pack", "Use over any background: the paper is see-through."),
        ("Playroom wall art", "Orange, teal and white marks on black."),
        ("Alpha channel test", "Transparent edges that resizers must handle well."),
    ],
    "rotating-squares.gif": [
        ("Loading squares", "A tiny animated spinner made of eight squares."),
        ("Spinner inspiration", "Small, quiet, and it loops forever."),
        ("Motion study", "Thirty frames; the light square travels round."),
        ("Tiny GIF", "Eighty pixels square: never upscale it."),
    ],
    "Rotating_earth_large.gif": [
        ("Rotating Earth", "The planet turning against the stars, as an animated GIF."),
        ("Earth in motion", "Africa and Europe roll into view."),
        ("Animated globe", "Forty-four frames, looping."),
        ("Home planet", "The only one with coffee."),
    ],
}


def derive(files: list[str]) -> list[tuple[str, str, str, str]]:
    """About TARGET_PINS pins as (photo file, board id, title, description).

    Round r pins every photo once, to the r-th of its boards (in turn) with its
    r-th caption, so the first page of the home grid shows every photo.
    """
    board_ids = list(BOARDS)
    pins: list[tuple[str, str, str, str]] = []
    round_number = 0
    while files and len(pins) < TARGET_PINS:
        for index, file in enumerate(files):
            if len(pins) == TARGET_PINS:
                break
            boards = PLACES.get(file) or [board_ids[index % len(board_ids)]]
            captions = CAPTIONS.get(file) or [(file.rsplit(".", 1)[0].replace("_", " "), "")]
            title, description = captions[round_number % len(captions)]
            pins.append((file, boards[round_number % len(boards)], title, description))
        round_number += 1
    return pins
