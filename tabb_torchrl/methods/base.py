"""The plug-in interface of cross-domain methods (defined in the core, :mod:`tabb_torchrl.objectives.method`),
and :class:`ResumablePrepare`, the protocol of a pre-training (``prepare``) that a checkpoint can stop
and a later session continue.

Examples:
    >>> from tabb_torchrl.methods.base import CrossDomainMethod
    >>> CrossDomainMethod.__module__
    'tabb_torchrl.objectives.method'
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Mapping

from tabb_torchrl.objectives.method import CrossDomainMethod, SourceEdit, SourceRows

__all__ = ["CrossDomainMethod", "SourceEdit", "SourceRows", "ResumablePrepare", "PrepareProgress"]

#: ``checkpoint()``: what a trainer gives a resumable ``prepare``, called at each safe point.
Checkpoint = Callable[[], None]


class PrepareProgress:
    """One call of a :class:`ResumablePrepare` method's ``prepare``: the state it resumes from and its safe points.

    Made by :meth:`ResumablePrepare.preparing`; the method's loops read :attr:`resume` once at their
    start and call :meth:`safe_point` whenever their whole state can be read back (after a gradient
    step, an epoch, an optimal-transport chunk).

    Attributes:
        resume (dict or None): the state of :meth:`ResumablePrepare.prepare_state` to continue from
            (``None``: start from the beginning).

    Examples:
        >>> calls = []
        >>> progress = PrepareProgress(lambda: calls.append(progress.state()), None)
        >>> for step in range(1, 3):
        ...     progress.safe_point(lambda: {"step": step})
        >>> calls
        [{'step': 1}, {'step': 2}]
    """

    def __init__(self, checkpoint: Checkpoint | None, resume: Mapping[str, Any] | None):
        self.resume = None if resume is None else dict(resume)
        self._checkpoint = checkpoint
        self._read: Callable[[], dict] | None = None

    def safe_point(self, read_state: Callable[[], dict]) -> None:
        """Record how to read the state here (``read_state()``, references are fine: it is copied when
        read) and call the trainer's ``checkpoint()`` (which may write a checkpoint, or stop the session
        by raising)."""
        self._read = read_state
        if self._checkpoint is not None:
            self._checkpoint()

    def state(self) -> dict | None:
        """The state at the last safe point (``None`` before the first)."""
        return None if self._read is None else self._read()


class ResumablePrepare:
    """Mixin of a cross-domain method whose pre-training can be checkpointed mid-way and resumed exactly.

    The protocol, used by :class:`~tabb_torchrl.pipeline.TABBTrainer` (``checkpoint.prepare_every_s``):

    * ``prepare(source, target, *, device=None, progress=False, checkpoint=None)`` calls
      ``checkpoint()`` at its safe points (after every step of its model fitting, every epoch, every
      optimal-transport chunk; the callback decides whether to write, and may raise to end the session);
    * :meth:`prepare_state` gives, during such a call, the partial state that the method's
      ``state_dict()`` does not hold (step counters, optimiser and generator states, the seed drawn
      from the run's RNG, ...; the models' weights and per-row results are in ``state_dict()``);
    * :meth:`load_prepare_state` (after ``load_state_dict`` of the same checkpoint) makes the next
      ``prepare`` continue from it: the end result is bit-identical to an uninterrupted ``prepare``
      (same generators, same draws; on CPU, same thread count).

    A subclass wraps its ``prepare`` body in ``with self.preparing(checkpoint) as progress:`` and
    reads ``progress.resume`` / calls ``progress.safe_point(...)`` (:class:`PrepareProgress`).

    Examples:
        >>> import torch
        >>> from tabb_torchrl.methods.base import CrossDomainMethod, ResumablePrepare
        >>> class Count(ResumablePrepare, CrossDomainMethod):
        ...     name = "count"
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.register_buffer("total", torch.zeros(()))
        ...     def prepare(self, source, target, *, device=None, progress=False, checkpoint=None):
        ...         with self.preparing(checkpoint) as run:
        ...             step = 0 if run.resume is None else run.resume["step"]
        ...             while step < 5:
        ...                 step += 1
        ...                 self.total += step
        ...                 run.safe_point(lambda: {"step": step})
        >>> m = Count()
        >>> saved = []
        >>> def stop_after_two():
        ...     saved.append((m.state_dict(), m.prepare_state()))
        ...     if len(saved) == 2:
        ...         raise KeyboardInterrupt       # a session ending after the second safe point
        >>> try:
        ...     m.prepare(None, None, checkpoint=stop_after_two)
        ... except KeyboardInterrupt:
        ...     pass
        >>> weights, state = saved[-1]
        >>> state
        {'method': 'count', 'step': 2}
        >>> fresh = Count()
        >>> fresh.load_state_dict(weights); fresh.load_prepare_state(state)
        <All keys matched successfully>
        >>> fresh.prepare(None, None)
        >>> float(fresh.total), fresh.prepare_state()          # 1 + 2 + 3 + 4 + 5; nothing in progress
        (15.0, None)
    """

    _prepare_progress: PrepareProgress | None = None
    _prepare_resume: dict | None = None

    def preparing(self, checkpoint: Checkpoint | None):
        """A context for one ``prepare`` call: yields its :class:`PrepareProgress` (with the state given to
        :meth:`load_prepare_state`, consumed here) and forgets it on exit."""
        import contextlib

        @contextlib.contextmanager
        def context():
            resume, self._prepare_resume = self._prepare_resume, None
            progress = PrepareProgress(checkpoint, resume)
            self._prepare_progress = progress
            try:
                yield progress
            finally:
                self._prepare_progress = None

        return context()

    def prepare_state(self) -> dict | None:
        """The partial pre-training state at the last safe point of the ``prepare`` in progress (a deep copy,
        with the method's ``name`` under ``"method"``); ``None`` when no ``prepare`` is running."""
        progress = self._prepare_progress
        state = None if progress is None else progress.state()
        if state is None:
            return None
        return {"method": self.name, **copy.deepcopy(state)}

    def load_prepare_state(self, state: Mapping[str, Any] | None) -> None:
        """Make the next ``prepare`` continue from ``state`` (:meth:`prepare_state`; ``None``: from the start).

        Raises:
            ValueError: ``state`` was written by another method.
        """
        if state is None:
            self._prepare_resume = None
            return
        if not isinstance(state, Mapping) or state.get("method") != self.name:
            got = state.get("method") if isinstance(state, Mapping) else type(state).__name__
            raise ValueError(f"{type(self).__name__}.load_prepare_state: the state was written by {got!r}, "
                             f"this method is {self.name!r}. Fix: resume with the configuration that wrote "
                             "the checkpoint, or start a new run.")
        self._prepare_resume = {k: v for k, v in state.items() if k != "method"}
