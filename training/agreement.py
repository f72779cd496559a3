"""How much people agree with each other on the same sets: the ceiling a preference model
can reach on the data (the HPS paper: humans agree 42.0% top-1 against HPS's 43.5%).

A *unit* is one set of images voted on by several people; its labels are what each of them
said, one label per rater: the picked image's index as a string (``"0"`` … ``"3"``),
``"tie"`` or ``"none"``. Any hashable labels work; only equality matters (nominal data).
Units with fewer than two labels say nothing about agreement and are left out of both
measures (Krippendorff calls them unpairable).

- :func:`pairwise_agreement`: the chance that one rater's label, used to predict another
  rater's on the same set, is right, i.e. top-1 accuracy of "a person" as a model. Each
  unit counts once (mean over units of the share of agreeing ordered rater pairs), so a set
  voted by ten people does not outweigh ten sets voted by two.
- :func:`krippendorff_alpha_nominal`: Krippendorff's alpha for nominal data, which corrects
  the agreement for what chance would give with the labels' overall frequencies: 1 is
  perfect agreement, 0 no better than chance, below 0 systematic disagreement.
- :func:`agreement`: both at once, with the counts they rest on.

Pure functions, no database: bot/ imports this for ``prefloop stats`` and the export's
manifest, ``prefloop eval hps`` for the ceiling it prints beside the model's accuracy.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations

Unit = Sequence[Hashable]


@dataclass(frozen=True)
class Agreement:
    """Agreement on a collection of units; a measure is None where it is undefined."""

    units: int  # units with two or more labels (the ones the measures use)
    labels: int  # labels in those units
    pairwise: float | None  # None: no unit has two labels
    alpha: float | None  # None: no unit has two labels, or every label is the same

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "units": self.units,
            "labels": self.labels,
            "pairwise": self.pairwise,
            "alpha": self.alpha,
        }


def pairable(units: Iterable[Unit]) -> list[Unit]:
    """The units with at least two labels."""
    return [unit for unit in units if len(unit) >= 2]


def pairwise_agreement(units: Iterable[Unit]) -> float | None:
    """Mean over units (with 2+ labels) of the share of ordered rater pairs that agree.

    For a unit with ``m`` labels of which ``n_c`` are ``c``, the share is
    ``sum_c n_c (n_c - 1) / (m (m - 1))``: the chance that a second rater, drawn at random
    among the others, said the same as the first. None when no unit has two labels.
    """
    shares = []
    for unit in pairable(units):
        m = len(unit)
        same = sum(n * (n - 1) for n in Counter(unit).values())
        shares.append(same / (m * (m - 1)))
    return sum(shares) / len(shares) if shares else None


def krippendorff_alpha_nominal(units: Iterable[Unit]) -> float | None:
    """Krippendorff's alpha for nominal labels: ``1 - D_o / D_e``.

    Built from the coincidence matrix: a unit with ``m`` labels adds ``1 / (m - 1)`` for
    each ordered pair of its labels, so every pairable label counts once in total. With
    ``n_c`` the coincidences of label ``c`` and ``n`` their sum, the observed disagreement
    is ``sum_{c != k} o_ck / n`` and the expected one ``sum_{c != k} n_c n_k / (n (n - 1))``.
    None when no unit has two labels or all labels are equal (D_e = 0: no variation to
    agree on). Krippendorff (2011), "Computing Krippendorff's alpha-reliability".
    """
    kept = pairable(units)
    observed = 0.0  # sum over c != k of o_ck
    totals: Counter[Hashable] = Counter()  # n_c
    for unit in kept:
        m = len(unit)
        counts = Counter(unit)
        for label, count in counts.items():
            totals[label] += count
        # ordered pairs of different labels: m^2 - sum n_c^2, each weighted 1 / (m - 1)
        observed += (m * m - sum(c * c for c in counts.values())) / (m - 1)
    n = sum(totals.values())
    if n < 2:
        return None
    expected = sum(a * b for a, b in combinations(totals.values(), 2)) * 2  # ordered c != k
    if expected == 0:
        return None
    return 1.0 - (n - 1) * observed / expected


def agreement(units: Iterable[Unit]) -> Agreement:
    """Both measures over the same units, with how many units and labels they rest on."""
    kept = pairable(list(units))
    return Agreement(
        units=len(kept),
        labels=sum(len(unit) for unit in kept),
        pairwise=pairwise_agreement(kept),
        alpha=krippendorff_alpha_nominal(kept),
    )
