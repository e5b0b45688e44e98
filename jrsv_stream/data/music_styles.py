"""Music theory and styles for the music stem: scales, chord progressions, drum patterns,
percussion, the style table (tempo, meter, GM program pools) and lead ranges."""

from __future__ import annotations

import numpy as np

#: GM programs that sound like a human voice (or are sound effects): never used
EXCLUDED_PROGRAMS = frozenset({52, 53, 54, 78, 85, 91, 94, *range(120, 128)})


# --------------------------------------------------------------------------------------
# Music theory and styles
# --------------------------------------------------------------------------------------

NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MODES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10),
         "dorian": (0, 2, 3, 5, 7, 9, 10), "mixolydian": (0, 2, 4, 5, 7, 9, 10)}
PROGRESSIONS = {  # scale degrees, 0-based
    "major": [[0, 4, 5, 3], [0, 5, 3, 4], [5, 3, 0, 4], [0, 3, 4, 3], [0, 3, 0, 4], [1, 4, 0, 0],
              [0, 5, 1, 4], [0, 2, 3, 4], [3, 0, 4, 5], [0, 4, 5, 2, 3, 0, 3, 4], [0, 3, 5, 4],
              [0, 0, 3, 4], [3, 4, 2, 5], [0, 1, 3, 4]],
    "minor": [[0, 5, 2, 6], [0, 3, 4, 0], [0, 6, 5, 6], [0, 5, 3, 4], [0, 3, 6, 2], [0, 2, 6, 3],
              [0, 6, 5, 4], [0, 3, 0, 4], [5, 6, 0, 0], [0, 0, 5, 6], [3, 4, 0, 0]],
    "dorian": [[0, 3], [0, 6, 3, 0], [0, 1, 0, 6], [0, 3, 0, 6], [0, 0, 3, 3]],
    "mixolydian": [[0, 6, 3, 0], [0, 6, 0, 3], [0, 3, 6, 0], [0, 0, 6, 3]],
}
BLUES = [0, 0, 0, 0, 3, 3, 0, 0, 4, 3, 0, 4]

# Drum patterns, one character per grid step: '.' rest, 'o' ghost, 'x' hit, 'X' accent.
# Voices: K kick, S snare, R rim/side stick, C clap, H closed hat, O open hat, P pedal hat,
# Y ride. 16 steps = 4/4 in 16ths, 12 steps = 4/4 in triplet 8ths ("T") or 3/4 in 16ths.
DRUM_NOTES = {"K": (36, 35), "S": (38, 40), "R": (37,), "C": (39,), "H": (42,), "O": (46,),
              "P": (44,), "Y": (51, 59)}
PATTERNS_44 = {
    "rock": {"K": "x.......x.x.....", "S": "....X.......X...", "H": "x.x.x.x.x.x.x.x."},
    "rock2": {"K": "x......xx.x.....", "S": "....X.......X...", "H": "x.x.x.x.x.x.x.x."},
    "pop16": {"K": "x.....x...x.....", "S": "....X.......X...", "H": "xoxoxoxoxoxoxoxo"},
    "halftime": {"K": "x.........x.....", "S": "........X.......", "H": "x.x.x.x.x.x.x.x."},
    "four_floor": {"K": "X...X...X...X...", "C": "....x.......x...", "O": "..x...x...x...x.",
                   "H": "x.x.x.x.x.x.x.x."},
    "disco": {"K": "X...X...X...X...", "S": "....X.......X...", "O": "..x...x...x...x.",
              "H": "xox.xox.xox.xox."},
    "boombap": {"K": "x......x..x.....", "S": "....X.......X...", "H": "x.x.x.x.x.x.x.xo"},
    "trap": {"K": "x......x..x...x.", "C": "........X.......", "H": "xxxxxxxxxxxxxxxx"},
    "funk": {"K": "x..x......x..x..", "S": "....X..o.o..X..o", "H": "xxxxxxxxxxxxxxxx"},
    "breakbeat": {"K": "x.........xx....", "S": "....X..o.o..X...", "H": "x.x.x.x.x.x.x.x."},
    "bossa": {"K": "x..xx..xx..xx..x", "R": "x..x..x...x..x..", "H": "xoxoxoxoxoxoxoxo"},
    "reggae": {"K": "........X.......", "R": "........X.......", "H": "x.x.x.x.x.x.x.x."},
    "train": {"K": "x.......x.......", "S": "ooooXoooooooXooo", "H": "....x.......x..."},
    "ballad": {"K": "x.........x.....", "R": "....x.......x...", "H": "x...x...x...x..."},
    "shuffle": {"K": "x.....x.....", "S": "...X.....X..", "H": "x.xx.xx.xx.x", "T": ""},
    "jazz": {"Y": "x..x.xx..x.x", "P": "...x.....x..", "K": "o.....o.....", "T": ""},
    "slow68": {"K": "x.....x.....", "S": "......X.....", "H": "xxxxxxxxxxxx", "T": ""},
}
PATTERNS_34 = {
    "waltz": {"K": "x...........", "S": "....x...x...", "H": "x.x.x.x.x.x."},
    "waltz_rock": {"K": "x.......x...", "S": "....X.......", "H": "x.x.x.x.x.x."},
    "jazz_waltz": {"Y": "x...x.xx..x.", "P": "....x...x...", "K": "o..........."},
    "ballad34": {"K": "x...........", "R": "....x...x...", "H": "x...x...x..."},
}
AUX_PERC = [  # (GM note, 16-step pattern)
    (54, "....x.......x..."), (54, "x.x.x.x.x.x.x.x."), (70, "xxxxxxxxxxxxxxxx"),
    (69, "x.x.x.x.x.x.x.x."), (56, "x...x...x...x..."), (63, "..x..xx...x..x.x"),
    (62, "x..x..x...x..x.."), (64, "......x.......x."), (60, "x.x..x.xx.x..x.x"),
    (75, "x..x..x...x.x..."), (76, "..x...x...x...x."), (81, "x...............")]
TOMS = (50, 48, 47, 45, 43, 41)
CRASHES = (49, 57)
DRUM_ROLE = {35: "kick", 36: "kick", 38: "snare", 40: "snare", 37: "snare", 39: "snare",
             42: "hat", 44: "hat", 46: "hat", 51: "hat", 59: "hat", 49: "crash", 57: "crash",
             41: "tom", 43: "tom", 45: "tom", 47: "tom", 48: "tom", 50: "tom"}

STYLES = {  # w: weight; m34: P(3/4); sev: P(7th chords); program pools per part
    "pop": dict(w=3.0, tempo=(80, 132), m34=0.1, drum_p=0.9,
                drums=["pop16", "rock", "halftime", "four_floor", "ballad"],
                kits=[0, 8, 16, 24], bass=[33, 34, 38, 35, 36],
                bass_pat=["eighths", "quarters", "syncop", "root5", "octave"],
                comp=[0, 1, 2, 4, 5, 24, 25, 27, 28],
                pad=[48, 49, 50, 51, 88, 89, 90, 92, 95, 16],
                arp=[0, 4, 5, 8, 9, 10, 11, 12, 25, 27, 46, 80, 81, 87, 98, 99, 100],
                lead=[73, 65, 66, 80, 81, 22, 56, 40, 71, 11], sev=0.2,
                modes={"major": 0.6, "minor": 0.3, "mixolydian": 0.05, "dorian": 0.05}),
    "rock": dict(w=2.0, tempo=(96, 160), m34=0.05, drum_p=0.97,
                 drums=["rock", "rock2", "halftime", "breakbeat"], kits=[0, 16, 8],
                 bass=[33, 34, 36], bass_pat=["eighths", "quarters", "octave"],
                 comp=[29, 30, 27, 25, 18, 16], pad=[48, 18, 19, 61, 50], arp=[27, 25, 26],
                 lead=[29, 30, 27, 81, 80, 65, 66], sev=0.05, power=0.6,
                 modes={"major": 0.4, "minor": 0.4, "mixolydian": 0.1, "dorian": 0.1}),
    "ballad": dict(w=2.0, tempo=(70, 96), m34=0.25, drum_p=0.7,
                   drums=["ballad", "halftime", "slow68"], kits=[0, 40, 8, 32],
                   bass=[32, 33, 35], bass_pat=["whole", "root5", "quarters"],
                   comp=[0, 1, 4, 24, 25, 46], pad=[48, 49, 89, 50, 44, 92, 16, 19],
                   arp=[0, 46, 24, 25, 8, 11, 45, 107], lead=[73, 40, 71, 68, 65, 75, 42, 60],
                   sev=0.3, modes={"major": 0.6, "minor": 0.4}),
    "jazz": dict(w=1.0, tempo=(90, 160), m34=0.2, drum_p=0.95, drums=["jazz", "shuffle"],
                 drums34=["jazz_waltz"], kits=[32, 40, 0], bass=[32, 33], bass_pat=["walking"],
                 comp=[0, 26, 4, 2, 11], pad=[16, 61, 48, 17], arp=[0, 26, 11],
                 lead=[65, 66, 56, 59, 73, 71, 64, 67, 11, 57], sev=0.9,
                 modes={"major": 0.6, "dorian": 0.4}),
    "electronic": dict(w=2.0, tempo=(110, 140), m34=0.0, drum_p=0.97,
                       drums=["four_floor", "disco", "breakbeat", "pop16", "trap"],
                       kits=[24, 25], bass=[38, 39, 87, 33, 81],
                       bass_pat=["octave", "syncop", "eighths", "kick"],
                       comp=[4, 5, 81, 90, 62, 63, 80],
                       pad=[88, 89, 90, 92, 93, 95, 50, 51, 99, 100],
                       arp=[80, 81, 87, 98, 99, 100, 8, 9, 10, 4, 5, 83],
                       lead=[80, 81, 82, 83, 84, 86, 87], sev=0.15,
                       modes={"minor": 0.6, "major": 0.25, "dorian": 0.15}),
    "funk": dict(w=1.0, tempo=(90, 118), m34=0.0, drum_p=1.0,
                 drums=["funk", "boombap", "pop16"], kits=[0, 24, 25, 8], bass=[36, 37, 33, 38],
                 bass_pat=["syncop", "kick", "octave"], comp=[7, 28, 27, 4, 16, 17],
                 pad=[61, 62, 16, 48], arp=[7, 27, 4], lead=[65, 66, 56, 61, 80, 22], sev=0.6,
                 swing=(0.0, 0.4), modes={"dorian": 0.4, "mixolydian": 0.3, "minor": 0.3}),
    "hiphop": dict(w=1.0, tempo=(70, 98), m34=0.0, drum_p=1.0,
                   drums=["boombap", "halftime", "trap"], kits=[25, 24, 0, 8],
                   bass=[38, 33, 39, 32], bass_pat=["kick", "whole", "syncop"],
                   comp=[4, 5, 0, 11, 12], pad=[89, 90, 48, 50, 92], arp=[4, 11, 12, 0, 46, 98],
                   lead=[73, 65, 80, 11, 22], sev=0.5, swing=(0.2, 0.7),
                   modes={"minor": 0.6, "dorian": 0.2, "major": 0.2}),
    "latin": dict(w=1.0, tempo=(100, 140), m34=0.0, drum_p=0.95, drums=["bossa"],
                  kits=[0, 32, 40], bass=[32, 33, 35], bass_pat=["root5", "syncop"],
                  comp=[24, 0, 26, 4], pad=[48, 21, 16], arp=[24, 46, 12],
                  lead=[73, 65, 56, 71, 21, 22], sev=0.6,
                  modes={"major": 0.5, "minor": 0.3, "dorian": 0.2}),
    "country": dict(w=1.0, tempo=(80, 140), m34=0.35, drum_p=0.85,
                    drums=["train", "rock", "ballad"], kits=[0, 40, 8], bass=[32, 33, 34],
                    bass_pat=["root5", "quarters"], comp=[25, 24, 105, 21, 0],
                    pad=[48, 21, 19, 20], arp=[25, 24, 105, 46, 15, 107],
                    lead=[40, 110, 22, 21, 73, 105, 27], sev=0.05,
                    modes={"major": 0.8, "mixolydian": 0.2}),
    "reggae": dict(w=0.5, tempo=(70, 96), m34=0.0, drum_p=1.0, drums=["reggae"], kits=[0, 8],
                   bass=[33, 32, 38], bass_pat=["syncop", "root5"], comp=[27, 16, 18, 0, 4],
                   pad=[16, 17], arp=[27, 4], lead=[56, 65, 73, 80], sev=0.2, skank=True,
                   modes={"major": 0.5, "minor": 0.5}),
    "ambient": dict(w=1.0, tempo=(70, 110), m34=0.15, drum_p=0.4, drums=["ballad", "halftime"],
                    kits=[48, 0, 40, 24], bass=[32, 43, 38, 39], bass_pat=["whole"],
                    comp=[0, 46, 11, 4], pad=[48, 49, 50, 51, 88, 89, 92, 93, 95, 99, 44],
                    arp=[8, 9, 10, 11, 12, 14, 46, 98, 108, 0, 45, 96],
                    lead=[73, 75, 40, 42, 60, 68, 71, 79], sev=0.2,
                    modes={"major": 0.4, "minor": 0.4, "dorian": 0.2}),
    "orchestral": dict(w=0.5, tempo=(70, 132), m34=0.3, drum_p=0.35,
                       drums=["ballad", "halftime"], kits=[48], bass=[43, 42, 58, 32],
                       bass_pat=["whole", "root5"], comp=[48, 45, 46],
                       pad=[48, 49, 61, 60, 19, 44], arp=[45, 46, 8, 13],
                       lead=[40, 73, 71, 68, 56, 60, 42], sev=0.1,
                       modes={"major": 0.5, "minor": 0.5}),
}
COMP_RHYTHMS_44 = ["x...x...x...x...", "..x...x...x...x.", "x.....x.........", "x..x..x...x..x..",
                   "x.x.x.x.x.x.x.x.", "x.......x.......", "x..x..x.x..x..x.", "x...x..x..x.x..."]
COMP_RHYTHMS_34 = ["x...x...x...", "x...........", "....x...x...", "x.x.x.x.x.x."]
LEAD_RANGE = {73: (67, 93), 72: (74, 98), 74: (65, 89), 75: (62, 86), 79: (65, 86), 71: (52, 80),
              68: (60, 84), 64: (58, 84), 65: (53, 79), 66: (46, 72), 67: (40, 64), 56: (56, 80),
              59: (56, 80), 57: (42, 67), 60: (45, 72), 40: (58, 88), 42: (40, 67), 22: (60, 84),
              21: (55, 81), 11: (53, 84), 12: (52, 84), 29: (52, 79), 30: (52, 79), 27: (52, 79),
              105: (50, 79), 110: (58, 88), 61: (52, 76)}


def _weighted(rng: np.random.Generator, table: dict):
    keys = list(table)
    w = np.array([table[k] for k in keys], dtype=float)
    return keys[int(rng.choice(len(keys), p=w / w.sum()))]


def _pick(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


def _allowed(progs) -> list[int]:
    return [p for p in progs if p not in EXCLUDED_PROGRAMS]
