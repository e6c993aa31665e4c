"""One replay buffer over source and target transitions, with a fixed number of rows
of each domain in every batch.

Cross-domain offline RL (TABB, OTDF, DARA, ...) trains on a large source dataset
and a small target dataset, and every update sees ``n_source`` source rows and
``n_target`` target rows. :class:`SourceTargetSampler` is a TorchRL
:class:`~torchrl.data.replay_buffers.samplers.Sampler` that draws exactly those
counts, so the whole pipeline is one :class:`~torchrl.data.TensorDictReplayBuffer`
(transforms, prefetching, checkpointing and memmap storage all work as usual).
:func:`make_source_target_buffer` builds that buffer from two TensorDicts.

Why not a TorchRL built-in: ``ReplayBufferEnsemble`` only splits a batch equally
and returns a stacked ``[2, n]`` batch, and ``OfflineToOnlineReplayBuffer`` is two
buffers with a transform applied after concatenation (not a ``Sampler`` that works
inside any buffer).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from tensordict import TensorDictBase, is_tensor_collection
from torchrl.data.replay_buffers.samplers import Sampler
from torchrl.data.replay_buffers.storages import Storage

__all__ = ["SourceTargetSampler", "make_source_target_buffer", "split_by_domain"]

from tabb_torchrl.keys import SOURCE as _SOURCE, TARGET as _TARGET  # noqa: E402


class _DomainRows:
    """Storage indices of one domain: a contiguous range when possible, else a list."""

    __slots__ = ("start", "count", "indices")

    def __init__(self, indices: torch.Tensor):
        self.count = int(indices.numel())
        self.start = int(indices[0]) if self.count else 0
        contiguous = self.count == 0 or int(indices[-1]) - self.start + 1 == self.count
        # A contiguous block (the layout make_source_target_buffer writes) needs
        # no index table, which matters for 1M-row source datasets.
        self.indices = None if contiguous else indices

    def take(self, draw: torch.Tensor) -> torch.Tensor:
        """Map draws in ``[0, count)`` to storage indices."""
        if self.indices is None:
            return draw + self.start
        return self.indices[draw.to(self.indices.device)]


class SourceTargetSampler(Sampler):
    """Draws exactly ``n_source`` source rows then ``n_target`` target rows per batch.

    Every batch has ``n_source + n_target`` rows: first ``n_source`` rows whose
    ``domain_key`` entry is :data:`~tabb_torchrl.data.SOURCE` (``0``), then
    ``n_target`` rows whose entry is :data:`~tabb_torchrl.data.TARGET` (``1``).
    Within each domain rows are drawn uniformly with replacement, with two
    vectorised ``torch.randint`` calls on the generator the replay buffer hands to
    its sampler (``ReplayBuffer(generator=...)`` or ``rb.set_rng(...)``; the global
    torch generator when the buffer has none). A buffer built with a seeded
    generator therefore gives the same batches, and its ``state_dict`` / ``dumps``
    (which save the generator) resume the exact sequence.

    How the sampler knows which rows are which: it reads the stored
    ``domain_key`` column once (the column must be stored, as
    :func:`make_source_target_buffer` does) and caches the storage indices of
    each domain, as a contiguous ``(start, count)`` range when the domain's rows
    are contiguous (the layout the factory writes: source rows first, then
    target rows) and as an index table otherwise. The cache is recomputed when
    the storage length changes, when the buffer writes (``add`` / ``extend``),
    and after ``load_state_dict`` / ``loads`` / ``_empty``. If you write into the
    storage behind the buffer's back, call :meth:`invalidate`.

    Args:
        n_source (int, optional): source rows per batch. ``0`` gives target-only
            batches (the ``iql_target`` baseline). Defaults to ``128``.
        n_target (int, optional): target rows per batch. ``0`` gives source-only
            batches. Defaults to ``128``.
        domain_key (str or tuple of str, optional): the stored column holding the
            domain flag. Defaults to ``"domain"``.

    Raises:
        ValueError: if a count is negative or not an integer, or both are ``0``.

    The sampler raises, at sampling time, a :class:`ValueError` when the buffer
    asks for a batch size other than ``n_source + n_target``, when a domain with
    a positive count has no rows in the storage, when the storage has no
    ``domain_key`` column, or when the column holds values other than 0 and 1.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
        >>> from tabb_torchrl.data import SourceTargetSampler
        >>> data = TensorDict(
        ...     {"x": torch.arange(10.0), "domain": torch.tensor([0] * 8 + [1] * 2)},
        ...     batch_size=[10],
        ... )
        >>> rb = TensorDictReplayBuffer(
        ...     storage=LazyTensorStorage(10),
        ...     sampler=SourceTargetSampler(n_source=3, n_target=2),
        ...     batch_size=5,
        ...     generator=torch.Generator().manual_seed(0),
        ... )
        >>> _ = rb.extend(data)
        >>> batch = rb.sample()
        >>> batch["domain"].tolist()
        [0, 0, 0, 1, 1]
        >>> bool((batch["x"][3:] >= 8).all())
        True
    """

    _STATE_FILE = "source_target_sampler.json"

    def __init__(
        self,
        n_source: int = 128,
        n_target: int = 128,
        domain_key: str | tuple[str, ...] = "domain",
    ):
        for name, value in (("n_source", n_source), ("n_target", n_target)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(
                    f"SourceTargetSampler: {name} must be a non-negative int, got {value!r}."
                )
        if n_source + n_target == 0:
            raise ValueError(
                "SourceTargetSampler: n_source and n_target are both 0, so a batch "
                "would be empty. Set at least one of them to a positive count."
            )
        self.n_source = int(n_source)
        self.n_target = int(n_target)
        self.domain_key = domain_key if isinstance(domain_key, str) else tuple(domain_key)
        self._rows: tuple[int, _DomainRows, _DomainRows] | None = None

    @property
    def generator(self) -> torch.Generator | None:
        """The generator of the index draws (the one the replay buffer hands to its sampler).

        Its ``get_state()`` / ``set_state()`` save and restore the batch sequence
        (checkpoints); ``None`` means the global torch generator.
        """
        return self._rng

    @property
    def batch_size(self) -> int:
        """Return ``n_source + n_target``, the only batch size this sampler draws."""
        return self.n_source + self.n_target

    # ------------------------------------------------------------------ domain rows
    def invalidate(self) -> None:
        """Forgets the cached domain rows; they are re-read at the next sample."""
        self._rows = None

    def _read_domain(self, storage: Storage, length: int) -> torch.Tensor:
        if getattr(storage, "ndim", 1) != 1:
            raise ValueError(
                f"SourceTargetSampler supports 1-dimensional storages only, got "
                f"storage.ndim={storage.ndim}. Build the storage with ndim=1 "
                f"(the default) and flat transitions."
            )
        inner = getattr(storage, "_storage", None)
        if is_tensor_collection(inner):
            # Read only the domain column (not the whole dataset).
            if self.domain_key not in inner.keys(True, True):
                raise ValueError(
                    f"SourceTargetSampler: the storage has no {self.domain_key!r} "
                    f"column (stored keys: {sorted(map(str, inner.keys(True, True)))}). "
                    f"Write it before extending the buffer (0 = source, 1 = target), "
                    f"or build the buffer with make_source_target_buffer()."
                )
            domain = inner.get(self.domain_key)[:length]
        else:
            data = storage.get(torch.arange(length))
            try:
                domain = data[self.domain_key]
            except (KeyError, TypeError, IndexError) as err:
                raise ValueError(
                    f"SourceTargetSampler: cannot read the {self.domain_key!r} column "
                    f"from a {type(storage).__name__}. Store TensorDicts with that "
                    f"column (0 = source, 1 = target)."
                ) from err
        domain = torch.as_tensor(domain)
        if domain.numel() != length:
            raise ValueError(
                f"SourceTargetSampler: the {self.domain_key!r} column must have one "
                f"entry per row (shape [N] or [N, 1]), got shape {tuple(domain.shape)}."
            )
        return domain.reshape(length)

    def _domain_rows(self, storage: Storage) -> tuple[_DomainRows, _DomainRows]:
        length = len(storage)
        if self._rows is not None and self._rows[0] == length:
            return self._rows[1], self._rows[2]
        domain = self._read_domain(storage, length)
        is_source = domain == _SOURCE
        is_target = domain == _TARGET
        n_other = length - int(is_source.sum()) - int(is_target.sum())
        if n_other:
            bad = (~(is_source | is_target)).nonzero()[0].item()
            raise ValueError(
                f"SourceTargetSampler: the {self.domain_key!r} column must hold "
                f"0 (source) or 1 (target); {n_other} rows hold other values "
                f"(first at storage index {bad}: {domain[bad].item()!r})."
            )
        source = _DomainRows(is_source.nonzero().squeeze(-1))
        target = _DomainRows(is_target.nonzero().squeeze(-1))
        self._rows = (length, source, target)
        return source, target

    def domain_sizes(self, storage: Storage) -> tuple[int, int]:
        """Number of stored source and target rows.

        Args:
            storage (Storage): the buffer's storage (``rb.storage``).

        Returns:
            tuple[int, int]: ``(n_source_rows, n_target_rows)``.

        Examples:
            >>> import torch
            >>> from tensordict import TensorDict
            >>> from tabb_torchrl.data import make_source_target_buffer
            >>> src = TensorDict({"x": torch.zeros(6, 1)}, [6])
            >>> tgt = TensorDict({"x": torch.ones(2, 1)}, [2])
            >>> rb = make_source_target_buffer(src, tgt, n_source=2, n_target=2)
            >>> rb.sampler.domain_sizes(rb.storage)
            (6, 2)
        """
        source, target = self._domain_rows(storage)
        return source.count, target.count

    # ------------------------------------------------------------------ Sampler API
    def sample(self, storage: Storage, batch_size: int) -> tuple[torch.Tensor, dict]:
        """Draws the storage indices of one batch.

        Args:
            storage (Storage): the buffer's storage.
            batch_size (int): must equal ``n_source + n_target``.

        Returns:
            tuple[torch.Tensor, dict]: int64 indices (source rows first) and an
            empty info dict.

        Raises:
            ValueError: wrong batch size, or a requested domain has no rows.
            RuntimeError: the storage is empty.

        Examples:
            >>> import torch
            >>> from tensordict import TensorDict
            >>> from torchrl.data import LazyTensorStorage
            >>> storage = LazyTensorStorage(4)
            >>> storage.set(torch.arange(4), TensorDict({"domain": torch.tensor([0, 0, 1, 1])}, [4]))
            >>> sampler = SourceTargetSampler(n_source=2, n_target=3)
            >>> index, info = sampler.sample(storage, 5)
            >>> index.shape, bool((index[:2] < 2).all()), bool((index[2:] >= 2).all())
            (torch.Size([5]), True, True)
        """
        if batch_size != self.batch_size:
            raise ValueError(
                f"SourceTargetSampler draws exactly n_source + n_target = "
                f"{self.n_source} + {self.n_target} = {self.batch_size} rows, but "
                f"the buffer asked for batch_size={batch_size}. Build the buffer with "
                f"batch_size={self.batch_size} and call rb.sample() without a size, "
                f"or change n_source / n_target."
            )
        src, tgt = self.sample_indices(storage)
        index = torch.cat([src, tgt]) if src.numel() and tgt.numel() else (src if src.numel() else tgt)
        device = getattr(storage, "device", None)
        if isinstance(device, (str, torch.device)) and device != "auto":
            index = index.to(device)
        return index, {}

    def sample_indices(self, storage: Storage) -> tuple[torch.Tensor, torch.Tensor]:
        """Storage indices of one batch, split by domain: ``(source_rows, target_rows)``.

        The draw of :meth:`sample` (which concatenates the two): ``n_source`` then
        ``n_target`` uniform draws with replacement, from the generator the buffer
        hands to its sampler. Fast update paths call it to gather rows themselves.

        Args:
            storage (Storage): the buffer's storage (``rb.storage``).

        Returns:
            tuple[torch.Tensor, torch.Tensor]: int64 indices on the generator's device
            (empty for a count of ``0``).

        Raises:
            ValueError: a requested domain has no rows.
            RuntimeError: the storage is empty.

        Examples:
            >>> import torch
            >>> from tensordict import TensorDict
            >>> from tabb_torchrl.data import make_source_target_buffer
            >>> rb = make_source_target_buffer(TensorDict({"x": torch.zeros(6, 1)}, [6]),
            ...     TensorDict({"x": torch.ones(2, 1)}, [2]), n_source=3, n_target=2, seed=0)
            >>> src, tgt = rb.sampler.sample_indices(rb.storage)
            >>> bool((src < 6).all()), bool((tgt >= 6).all()), tgt.shape
            (True, True, torch.Size([2]))
        """
        if len(storage) == 0:
            raise RuntimeError("Cannot sample from an empty storage.")
        source, target = self._domain_rows(storage)
        generator = self._rng
        gen_device = generator.device if generator is not None else torch.device("cpu")
        parts = []
        for rows, count, name in (
            (source, self.n_source, "source"),
            (target, self.n_target, "target"),
        ):
            if count == 0:
                parts.append(torch.empty(0, dtype=torch.long, device=gen_device))
                continue
            if rows.count == 0:
                other = "n_source=0" if name == "source" else "n_target=0"
                raise ValueError(
                    f"SourceTargetSampler: {count} {name} rows requested per batch "
                    f"(n_{name}={count}) but the buffer holds no {name} rows "
                    f"({self.domain_key!r} == {_SOURCE if name == 'source' else _TARGET}). "
                    f"Add {name} data to the buffer, or set {other} for batches "
                    f"without {name} rows."
                )
            draw = torch.randint(
                0, rows.count, (count,), generator=generator, device=gen_device
            )
            parts.append(rows.take(draw))
        return parts[0], parts[1]

    def add(self, index: int) -> None:
        self.invalidate()

    def extend(self, index: torch.Tensor) -> None:
        self.invalidate()

    def _empty(self) -> None:
        self.invalidate()

    def state_dict(self) -> dict[str, Any]:
        """The sampler's configuration (the random state lives in the buffer).

        Returns:
            dict: ``n_source``, ``n_target`` and ``domain_key``.

        Examples:
            >>> SourceTargetSampler(4, 2).state_dict()
            {'n_source': 4, 'n_target': 2, 'domain_key': 'domain'}
        """
        return {
            "n_source": self.n_source,
            "n_target": self.n_target,
            "domain_key": self.domain_key,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restores the configuration saved by :meth:`state_dict`.

        Args:
            state_dict (dict): as returned by :meth:`state_dict`.

        Examples:
            >>> sampler = SourceTargetSampler()
            >>> sampler.load_state_dict({"n_source": 4, "n_target": 2, "domain_key": "domain"})
            >>> sampler.batch_size
            6
        """
        restored = SourceTargetSampler(
            int(state_dict["n_source"]),
            int(state_dict["n_target"]),
            state_dict.get("domain_key", "domain"),
        )
        self.n_source = restored.n_source
        self.n_target = restored.n_target
        self.domain_key = restored.domain_key
        self.invalidate()

    def dumps(self, path) -> None:
        """Writes the configuration to ``path/source_target_sampler.json``.

        Args:
            path (str or Path): directory (created if missing); ``rb.dumps`` passes
                ``<buffer dir>/sampler``.

        Examples:
            >>> import tempfile
            >>> with tempfile.TemporaryDirectory() as d:
            ...     SourceTargetSampler(4, 2).dumps(d)
            ...     s = SourceTargetSampler()
            ...     s.loads(d)
            >>> (s.n_source, s.n_target)
            (4, 2)
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = dict(self.state_dict())
        if isinstance(state["domain_key"], tuple):
            state["domain_key"] = list(state["domain_key"])
        with open(path / self._STATE_FILE, "w") as file:
            json.dump(state, file)

    def loads(self, path) -> None:
        """Reads the configuration written by :meth:`dumps`.

        Args:
            path (str or Path): the directory given to :meth:`dumps`.

        Raises:
            FileNotFoundError: no saved sampler state in ``path``.

        Examples:
            >>> import tempfile
            >>> with tempfile.TemporaryDirectory() as d:
            ...     SourceTargetSampler(0, 8).dumps(d)
            ...     s = SourceTargetSampler()
            ...     s.loads(d)
            >>> s.batch_size
            8
        """
        file_path = Path(path) / self._STATE_FILE
        if not file_path.exists():
            raise FileNotFoundError(
                f"No SourceTargetSampler state at {file_path}: was the buffer saved "
                f"with a SourceTargetSampler?"
            )
        with open(file_path) as file:
            state = json.load(file)
        key = state.get("domain_key", "domain")
        state["domain_key"] = key if isinstance(key, str) else tuple(key)
        self.load_state_dict(state)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(n_source={self.n_source}, "
            f"n_target={self.n_target}, domain_key={self.domain_key!r})"
        )


def _prepare(
    data: TensorDictBase | None, name: str, flag: int, domain_key
) -> TensorDictBase | None:
    if data is None:
        return None
    if not is_tensor_collection(data):
        raise TypeError(f"{name} must be a TensorDict, got {type(data).__name__}.")
    if data.batch_dims != 1:
        raise ValueError(
            f"{name} must be a flat TensorDict of transitions (batch_size [N]), got "
            f"batch_size {list(data.batch_size)}; flatten it with data.reshape(-1)."
        )
    if data.shape[0] == 0:  # (TensorDict.numel() is never 0)
        return None
    out = data.copy()  # shallow: the caller's TensorDict is not modified
    out.set(domain_key, torch.full((data.shape[0],), flag, dtype=torch.int64, device=data.device))
    return out


def _check_compatible(source: TensorDictBase, target: TensorDictBase) -> None:
    src_keys = set(source.keys(True, True))
    tgt_keys = set(target.keys(True, True))
    if src_keys != tgt_keys:
        raise ValueError(
            "source and target must hold the same keys. Only in source: "
            f"{sorted(map(str, src_keys - tgt_keys))}; only in target: "
            f"{sorted(map(str, tgt_keys - src_keys))}."
        )
    for key in src_keys:
        s, t = source.get(key), target.get(key)
        if s.shape[1:] != t.shape[1:]:
            raise ValueError(
                f"source and target disagree on {key!r}: per-row shape "
                f"{list(s.shape[1:])} vs {list(t.shape[1:])}. Do both datasets belong "
                f"to the same environment family (same observation/action sizes)?"
            )
        if s.dtype != t.dtype:
            raise ValueError(
                f"source and target disagree on the dtype of {key!r}: {s.dtype} vs "
                f"{t.dtype}. Load both with the same loader (float32 transitions)."
            )


class _ToDevice:
    """Moves a sampled batch to a device (memmap storages live on the CPU)."""

    def __init__(self, device: torch.device):
        self.device = device

    def __call__(self, data):
        return data.to(self.device, non_blocking=True)

    def __repr__(self) -> str:
        return f"_ToDevice({self.device})"


def make_source_target_buffer(
    source: TensorDictBase | None,
    target: TensorDictBase | None,
    n_source: int = 128,
    n_target: int = 128,
    storage: str = "tensor",
    scratch_dir: str | Path | None = None,
    seed: int | None = None,
    transform: Callable | None = None,
    device: str | torch.device | None = None,
    prefetch: int | None = None,
    *,
    domain_key: str = "domain",
    pin_memory: bool = False,
    columns: Callable[[TensorDictBase], Any] | None = None,
):
    """Builds one replay buffer over source and target transitions.

    Writes the ``domain_key`` column (int64, shape ``[N]``: 0 on source rows, 1 on
    target rows; an existing column is overwritten), stores source rows first and
    then target rows in a storage of exactly ``len(source) + len(target)`` rows, and
    returns a :class:`~torchrl.data.TensorDictReplayBuffer` whose ``sample()``
    gives ``n_source`` source rows followed by ``n_target`` target rows
    (:class:`SourceTargetSampler`). Because the domain column is stored, a
    buffer ``transform`` (which TorchRL 0.14 runs before the sampler's info is
    written) can read it, as the TBM weighting transform does.

    The inputs are not modified (the domain column is set on shallow copies).

    Args:
        source (TensorDictBase or None): flat source transitions, batch_size
            ``[N_s]``. May be ``None`` or empty when ``n_source == 0``.
        target (TensorDictBase or None): flat target transitions, same keys,
            per-row shapes and dtypes as ``source``. May be ``None`` or empty when
            ``n_target == 0``.
        n_source (int, optional): source rows per batch. Defaults to ``128``.
        n_target (int, optional): target rows per batch. Defaults to ``128``.
        storage (str, optional): ``"tensor"`` (:class:`~torchrl.data.TensorStorage`
            over one concatenated copy of the data, in memory on ``device``) or ``"memmap"``
            (:class:`~torchrl.data.LazyMemmapStorage`, on disk, CPU). Defaults to
            ``"tensor"``.
        scratch_dir (str or Path, optional): directory for the memmap files
            (``storage="memmap"`` only); a temporary directory, removed at exit,
            when ``None``.
        seed (int, optional): seeds the buffer's own ``torch.Generator``, so the
            batch sequence is reproducible. When ``None`` the generator is seeded
            from the global torch RNG (reproducible under ``torch.manual_seed``).
        transform (Callable, optional): a TorchRL ``Transform`` (or callable)
            applied to each sampled batch, e.g. the TBM weighting transform.
        device (str or torch.device, optional): where sampled batches live. With
            ``storage="tensor"`` the whole dataset is stored there; with
            ``"memmap"`` batches are moved there before ``transform`` runs.
            Defaults to the CPU.
        prefetch (int, optional): number of batches prefetched in background
            threads (TorchRL's ``prefetch``). Defaults to ``None`` (off).

    Keyword Args:
        domain_key (str, optional): name of the domain column. Defaults to
            ``"domain"``.
        pin_memory (bool, optional): pin sampled CPU batches (for a later
            host-to-GPU copy). Honoured only when CUDA is available; ignored with a
            warning otherwise (pinning raises on CPU-only builds). Defaults to
            ``False``.
        columns (Callable, optional): called on the data to be stored, before it is
            stored (with ``storage="tensor"`` the concatenated TensorDict that becomes the
            storage, so columns added in place are stored without a copy; with
            ``"memmap"`` each of the two parts), e.g.
            ``lambda td: latent_model.cache_latents(td)`` to store per-row latents.
            The caller's datasets are not modified. Defaults to ``None``.

    Returns:
        TensorDictReplayBuffer: with ``batch_size = n_source + n_target``, the
        :class:`SourceTargetSampler` as ``rb.sampler`` and a seeded generator.

    Raises:
        ValueError: a domain with a positive count has no data; the datasets
            disagree on keys, per-row shapes or dtypes; unknown ``storage``; the
            counts are invalid (see :class:`SourceTargetSampler`).
        TypeError: ``source`` / ``target`` is not a TensorDict.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from tabb_torchrl.data import make_source_target_buffer, split_by_domain
        >>> src = TensorDict({"observation": torch.randn(100, 3)}, [100])
        >>> tgt = TensorDict({"observation": torch.randn(10, 3)}, [10])
        >>> rb = make_source_target_buffer(src, tgt, n_source=6, n_target=2, seed=0)
        >>> len(rb), rb.sample()["domain"].tolist()
        (110, [0, 0, 0, 0, 0, 0, 1, 1])
        >>> s, t = split_by_domain(rb.sample())
        >>> s.batch_size, t.batch_size
        (torch.Size([6]), torch.Size([2]))
        >>> target_only = make_source_target_buffer(None, tgt, n_source=0, n_target=4, seed=0)
        >>> target_only.sample()["domain"].tolist()
        [1, 1, 1, 1]
    """
    from torchrl.data import LazyMemmapStorage, TensorDictReplayBuffer, TensorStorage

    sampler = SourceTargetSampler(n_source, n_target, domain_key=domain_key)
    src = _prepare(source, "source", _SOURCE, domain_key)
    tgt = _prepare(target, "target", _TARGET, domain_key)
    for data, count, name, fix in (
        (src, n_source, "source", "n_source=0"),
        (tgt, n_target, "target", "n_target=0"),
    ):
        if data is None and count > 0:
            raise ValueError(
                f"make_source_target_buffer: n_{name}={count} {name} rows per batch "
                f"requested but the {name} dataset is empty or None. Pass {name} "
                f"transitions, or set {fix} (e.g. n_source=0 for a target-only "
                f"baseline)."
            )
    parts = [d for d in (src, tgt) if d is not None]
    if not parts:
        raise ValueError("make_source_target_buffer: both datasets are empty.")
    if len(parts) == 2:
        _check_compatible(parts[0], parts[1])
    total = sum(d.shape[0] for d in parts)

    device = torch.device(device) if device is not None else torch.device("cpu")
    post_transforms = []
    prefilled = False
    if storage == "tensor":
        # One copy of the data: the concatenation (or a clone of a single part) becomes
        # the storage itself (``TensorStorage`` uses it without copying it again).
        data_all = torch.cat(parts) if len(parts) == 2 else parts[0].clone()
        data_all = data_all.to(device)
        if columns is not None:
            columns(data_all)
        store = TensorStorage(data_all, device=device)
        prefilled = True
    elif storage == "memmap":
        store = LazyMemmapStorage(
            total, scratch_dir=None if scratch_dir is None else str(scratch_dir)
        )
        if device.type != "cpu":
            post_transforms.append(_ToDevice(device))
    else:
        raise ValueError(
            f"make_source_target_buffer: storage must be 'tensor' or 'memmap', "
            f"got {storage!r}."
        )
    if pin_memory and not torch.cuda.is_available():
        warnings.warn("pin_memory=True ignored: CUDA is not available.", stacklevel=2)
        pin_memory = False
    if seed is None:
        seed = int(torch.empty((), dtype=torch.int64).random_().item())
    generator = torch.Generator().manual_seed(int(seed))

    rb = TensorDictReplayBuffer(
        storage=store,
        sampler=sampler,
        batch_size=sampler.batch_size,
        prefetch=prefetch,
        pin_memory=pin_memory,
        generator=generator,
    )
    if not prefilled:
        for data in parts:  # source rows first, then target rows
            if columns is not None:
                columns(data)
            rb.extend(data)
    for t in post_transforms:
        rb.append_transform(t)
    if transform is not None:
        rb.append_transform(transform)
    return rb


def split_by_domain(
    batch: TensorDictBase, domain_key: str = "domain"
) -> tuple[TensorDictBase, TensorDictBase]:
    """Splits a batch into its source rows and its target rows.

    Args:
        batch (TensorDictBase): a batch with a ``domain_key`` column (0 = source,
            1 = target), shape ``[B]`` or ``[B, 1]``.
        domain_key (str, optional): name of the domain column. Defaults to
            ``"domain"``.

    Returns:
        tuple[TensorDictBase, TensorDictBase]: ``(source_rows, target_rows)``, in
        their order in ``batch``.

    Raises:
        KeyError: the batch has no ``domain_key`` column.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> batch = TensorDict({"x": torch.arange(4), "domain": torch.tensor([0, 1, 0, 1])}, [4])
        >>> s, t = split_by_domain(batch)
        >>> s["x"].tolist(), t["x"].tolist()
        ([0, 2], [1, 3])
    """
    domain = batch.get(domain_key).reshape(batch.shape[0])
    return batch[domain == _SOURCE], batch[domain == _TARGET]
