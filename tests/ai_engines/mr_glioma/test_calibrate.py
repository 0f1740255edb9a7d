"""The lesion checks' calibration: the overrides act, and the choice respects the real case."""

from __future__ import annotations

import numpy as np
import pytest

from ai_engines.mr_glioma.calibrate import choose
from ai_engines.mr_glioma.engine import keep_lesions


def _probabilities(shape, boxes):
    """Class probabilities with an enhancing box at each index expression."""
    p = np.zeros((4, *shape), np.float16)
    p[0] = 1.0
    for box in boxes:
        p[0][box] = 0.05
        p[3][box] = 0.95
    return p


def test_size_and_depth_overrides_act():
    brain = np.zeros((60, 60, 60), bool)
    brain[5:55, 5:55, 5:55] = True
    # a 0.5 ml lesion deep inside, a 1.6 ml lesion in the outer 4 mm of the brain
    p = _probabilities(brain.shape, [np.s_[28:36, 28:36, 28:36], np.s_[5:9, 15:35, 15:35]])
    _, default = keep_lesions(p, brain)
    _, small_ok = keep_lesions(p, brain, min_lesion_ml=0.25)
    _, shallow_ok = keep_lesions(p, brain, min_lesion_ml=0.25, min_mean_depth_mm=0.0)
    assert (default, small_ok, shallow_ok) == (0, 1, 2)


def test_choice_needs_no_false_lesion_on_the_real_case_and_tumour_free_brains():
    def row(kind, wt, false):
        return {"kind": kind, "scores": {"1/6": {"WT": wt[0], "false_lesions": false[0], "missed": 0},
                                         "0.25/2": {"WT": wt[1], "false_lesions": false[1], "missed": 0}}}

    studies = [row("solid", (0.2, 0.7), (0, 0)), row("none", (None, None), (0, 0))]
    best, table = choose(studies, {"1/6": {"false_lesions": 0}, "0.25/2": {"false_lesions": 0}})
    assert best == "0.25/2" and table[best]["mean_WT"] == 0.7
    best, _ = choose(studies, {"1/6": {"false_lesions": 0}, "0.25/2": {"false_lesions": 1}})
    assert best == "1/6"
    studies[1] = row("none", (None, None), (0, 2))
    best, _ = choose(studies, {"1/6": {"false_lesions": 0}, "0.25/2": {"false_lesions": 0}})
    assert best == "1/6"


def test_brain2_alone_chooses_the_stricter_clean_pair():
    # `calibrate --cases 0 --brain2 ...`: no synthetic study, only the real case
    best, table = choose([], {"1/6": {"false_lesions": 0}, "0.25/2": {"false_lesions": 1}})
    assert best == "1/6" and not table["0.25/2"]["allowed"]
    best, _ = choose([], {"1/6": {"false_lesions": 0}, "0.25/2": {"false_lesions": 0}})
    assert best == "1/6"  # no Dice to tell them apart: the stricter pair
    with pytest.raises(ValueError, match="nothing to choose"):
        choose([], None)
