"""Pure planning: which steps run, in what order, and which run together.

Phases run in their fixed order.  Inside a phase, steps run by (order, name):
a hook's order is its ``NN`` prefix, a built-in step's order is fixed (see
``steps.FIRST/MIDDLE/LAST``).  Hooks of one phase that share a prefix form one
group and run concurrently; a built-in step is always a group of its own and
runs after the hooks that share its order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from liveupd.transition.phases import Phase
from liveupd.transition.steps import Step


@dataclass(frozen=True)
class Group:
    phase: Phase
    order: int
    steps: tuple[Step, ...]

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.steps]


def _sort_key(step: Step) -> tuple[int, int, str]:
    return (step.order, 0 if step.concurrent else 1, step.name)


def plan(steps: Iterable[Step], phases: Sequence[Phase]) -> list[Group]:
    """The groups to run for ``phases``, in order.  Steps of other phases are ignored."""
    all_steps = list(steps)
    groups: list[Group] = []
    for phase in phases:
        current: list[Step] = []
        for step in sorted((s for s in all_steps if s.phase == phase), key=_sort_key):
            if current and (
                not step.concurrent or not current[0].concurrent or current[0].order != step.order
            ):
                groups.append(Group(phase, current[0].order, tuple(current)))
                current = []
            current.append(step)
        if current:
            groups.append(Group(phase, current[0].order, tuple(current)))
    return groups


def step_count(groups: Iterable[Group]) -> int:
    return sum(len(g.steps) for g in groups)
