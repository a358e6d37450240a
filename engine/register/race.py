"""Racing registrations: several candidate runs advance a little, are scored, and only the best
is finished (successive halving), with progress, cancellation and failures handled for all.

A :class:`Candidate` is one registration run with its name and its latest score; ``race``
takes the candidates, the number of steps, the probe fraction and the scoring function (the
one documented energy, ``engine.correspond.fit_score.FitScorer``) and returns the finished
winner. With one candidate there is no race: it simply runs to the end.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

from ..errors import Cancelled
from ..progress import CancelToken, Progress


@dataclass
class Candidate:
    """One registration of a race.

    run : an object with ``step``, ``advance(until, progress)`` and ``vertices()`` (a Registration)
    name : what the run is (the guidance schedule), for meta
    score : its latest score (None before it was scored)
    """

    run: object
    name: str
    score: float | None = None


def race_stages(n: int, steps: int, probe_fraction: float) -> tuple[int, list[tuple[int, int, int]]]:
    """(probe steps, [(start step, stop step, runs kept), ...]) of a race of ``n`` runs.

    Successive halving: with more than two runs, all go to half the probe and the better half
    (at least two) goes on to the probe; two runs both go to the probe; one run does not race.
    """
    probe = int(round(min(max(probe_fraction, 0.0), 1.0) * steps)) if n > 1 else 0
    if probe <= 0:
        return 0, []
    if n > 2 and probe >= 2:
        return probe, [(0, probe // 2, n), (probe // 2, probe, max(2, n // 2))]
    return probe, [(0, probe, n)]


def race(candidates: list[Candidate], steps: int, probe_fraction: float, score: Callable[[object], float],
         progress: Progress, in_threads: bool = True) -> Candidate:
    """Race the candidates (see the module docstring) and finish the best; returns it.

    score : deformed source vertices (ns, 3) -> score, lower is better
    progress : the match's Progress, in its register stage (reports the race's steps in order)
    in_threads : advance the racing runs side by side, one thread each (same results)
    """
    probe, stages = race_stages(len(candidates), steps, probe_fraction)
    race_steps = sum(k * (stop - start) for start, stop, k in stages)
    sp = StepProgress(progress, race_steps + steps - probe, steps)
    alive = list(range(len(candidates)))
    for start, stop, keep in stages:
        alive = sorted(alive, key=lambda i: candidates[i].score if candidates[i].score is not None else 0.0)[:keep]
        live = [candidates[i].run for i in alive]
        for group in ([live] if in_threads else [[r] for r in live]):
            advance_together(group, stop, start, sp.piece(start))
            sp.finish(len(group) * (stop - start))
        for i in alive:
            candidates[i].score = float(score(candidates[i].run.vertices()))
    winner = min((candidates[i] for i in alive), key=lambda c: c.score if c.score is not None else 0.0)
    winner.run.advance(steps, sp.piece(probe))
    return winner


class StepProgress:
    """Progress of a registration race: a run reports the fraction of its own ``run_steps``;
    it is passed on as the fraction of all ``total_steps`` of the race, counting the steps
    of earlier pieces (``finish``) and skipping the steps before this piece's ``start``."""

    def __init__(self, prog: Progress, total_steps: int, run_steps: int) -> None:
        self.prog, self.token = prog, prog.token
        self.total, self.run_steps = max(1, total_steps), max(1, run_steps)
        self.done = self.start = 0

    def piece(self, start: int) -> "StepProgress":
        self.start = start
        return self

    def finish(self, n: int) -> None:
        self.done += n

    def update(self, fraction: float) -> None:
        step = fraction * self.run_steps - self.start
        self.prog.update((self.done + max(0.0, step)) / self.total)

    def steps(self, n: int) -> None:
        """Report ``n`` steps done in the current piece (all of its runs together)."""
        self.prog.update((self.done + n) / self.total)


class _StopFlag:
    """The caller's cancel token, plus a stop set when a sibling run of a race failed."""

    def __init__(self, token: CancelToken) -> None:
        self.outer, self.stop = token, threading.Event()

    def raise_if_cancelled(self) -> None:
        self.outer.raise_if_cancelled()
        if self.stop.is_set():
            raise Cancelled("a sibling registration failed")


class _RunProgress:
    """What a registration run in a worker thread sees of the progress: the stop flag only
    (the main thread reports the race's progress, so callbacks never run in a worker)."""

    def __init__(self, flag: _StopFlag) -> None:
        self.token = flag

    def update(self, fraction: float) -> None:
        self.token.raise_if_cancelled()


def advance_together(runs: list, stop: int, start: int, sp: StepProgress) -> None:
    """Advance several registrations to step ``stop`` at once, one thread each.

    The runs share nothing they write (the Poisson factor they share locks its solve), and
    the heavy parts of a step (torch kernels, k-d tree queries, the sparse solve) release
    the GIL (measured on faust5k, 2 cores: the median register stage 20.7 s in turn,
    16.4 s side by side); each run computes exactly what it computes alone. Progress and cancellation
    stay in the calling thread; a failure or a cancel stops every run within one step.
    """
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    if len(runs) == 1:
        runs[0].advance(stop, sp)
        return
    flag = _StopFlag(sp.token)
    with ThreadPoolExecutor(max_workers=len(runs), thread_name_prefix="registration") as pool:
        futures = [pool.submit(r.advance, stop, _RunProgress(flag)) for r in runs]
        try:
            pending = futures
            while pending:
                _, pending = wait(pending, timeout=0.2, return_when=FIRST_EXCEPTION)
                sp.steps(sum(r.step - start for r in runs))
                for f in futures:
                    if f.done() and f.exception() is not None:
                        raise f.exception()
        except BaseException:
            flag.stop.set()
            wait(futures)
            raise
