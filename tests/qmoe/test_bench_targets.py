"""The targets' own helpers: how a figure is written beside its target."""

from __future__ import annotations

import inspect

from qmoe.bench_targets import against, sign_verdict


def test_a_figure_never_reads_on_the_other_side_of_its_target() -> None:
    assert against(0.8955, 0.9, at_least=True) == "0.895"  # "0.90" would read as met
    assert against(0.8999, 0.9, at_least=True) == "0.8999"
    assert against(0.91, 0.9, at_least=True) == "0.91"
    assert against(0.9, 0.9, at_least=True) == "0.90"  # exactly at the target: met, and reads so
    assert against(1.2049, 1.2, at_least=False) == "1.205"
    assert against(1.1951, 1.2, at_least=False) == "1.20"  # at or under 1.2 either way: two digits
    assert against(8.04, 8.0, at_least=False, digits=1) == "8.04"
    assert against(600.4, 600.0, at_least=False, digits=0) == "600.4"
    assert against(19.96, 20.0, at_least=True, digits=1) == "19.96"
    assert against(float("nan"), 0.9, at_least=True) == "nan"
    # beyond 3 more digits it gives up: the verdict column still says NO
    assert against(0.89999999, 0.9, at_least=True) == "0.90000"



def test_sign_verdict_reads_both_sides_and_says_when_it_cannot_decide() -> None:
    assert sign_verdict([2.0] * 5, 1.0, at_least=True) == (True, "5 of 5 rounds >= 1x: sign test p = 0.031")
    assert sign_verdict([0.5] * 5, 1.0, at_least=True) == (False, "0 of 5 rounds >= 1x: sign test p = 0.031")
    assert sign_verdict([1.0] * 5, 1.0, at_least=True)[0] is True  # on the target counts as meeting it
    assert sign_verdict([1.0] * 5, 1.0, at_least=False)[0] is True
    met, how = sign_verdict([2.0, 2.0, 2.0, 0.5], 1.0, at_least=True)  # 4 rounds: 0.5^4 > 0.05
    assert met is None and how == "3 of 4 rounds >= 1x: not shown, sign test p = 0.31 (least possible 0.062)"


def test_the_qat_rounds_let_the_sign_test_decide_a_clear_case() -> None:
    from scipy.stats import binom

    from qmoe.bench import bench_epochs
    from qmoe.bench_targets import EPOCH_ROUNDS, SIGN_TEST_ALPHA
    from qmoe.cli.bench_cmd import bench

    # the fewest rounds on one side that the test accepts, then how often that many fall there
    # when each round lands there with probability 3/4
    need = next(k for k in range(EPOCH_ROUNDS + 1)
                if sign_verdict([1.0] * k + [2.0] * (EPOCH_ROUNDS - k), 1.5, at_least=False)[0])
    assert (EPOCH_ROUNDS, need) == (31, 21)
    assert binom.sf(need - 1, EPOCH_ROUNDS, 0.75) > 0.85  # 21 rounds (15 needed): 74%; 11 (9 needed): 46%
    assert binom.sf(need - 1, EPOCH_ROUNDS, 0.5) <= SIGN_TEST_ALPHA
    assert inspect.signature(bench_epochs).parameters["rounds"].default == EPOCH_ROUNDS
    assert inspect.signature(bench).parameters["rounds"].default == EPOCH_ROUNDS
