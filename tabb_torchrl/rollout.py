"""Evaluate a trained policy in its target env, and record a video of it.

Usage::

    python -m tabb_torchrl.rollout <run dir> --episodes 10
    python -m tabb_torchrl.rollout <run dir> --episodes 10 --video hopper.gif     # or .mp4 (imageio-ffmpeg)
    python -m tabb_torchrl.rollout agent.pt --seed 0 --max-episode-steps 1000

``<run dir>`` is a run directory of ``recipes/tabb_offline.py`` or :meth:`tabb_torchrl.Agent.fit`
(its ``config.yaml`` and checkpoint), or a file of :meth:`tabb_torchrl.Agent.save`. The policy
(:func:`tabb_torchrl.load_policy`) acts deterministically in the run's target env, through the
pipeline's evaluator (:class:`~tabb_torchrl.pipeline.PolicyEvaluator`). The defaults are the run's
own evaluation settings -- episode seeds ``seed + eval.seed_offset + i``, ``eval.max_episode_steps``,
``eval.reference`` -- so ``--episodes <eval.episodes>`` reproduces the run's final evaluation.

It prints the mean ± std of the return and of the D4RL normalised score over the episodes.

``--video PATH`` also records the first episode (``render_mode="rgb_array"``, MuJoCo offscreen
rendering). ``.gif`` needs only Pillow; ``.mp4`` (and the other ffmpeg formats) needs
``imageio-ffmpeg`` (``pip install -e '.[video]'``). Without a display, ``MUJOCO_GL`` is set to
``egl`` unless it is set already (``MUJOCO_GL=osmesa`` for software rendering).

Exit status: 0; 2 for a path that is not a run, bad arguments, or a video that cannot be rendered
or written (the message says why and the fix).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["RolloutError", "check_video_path", "evaluate_policy", "main", "record_video"]

#: Frames per second of a video at most (frames are subsampled from the env's ``render_fps``).
MAX_VIDEO_FPS = 30
#: Video formats written without ffmpeg (Pillow).
PILLOW_FORMATS = (".gif",)


class RolloutError(RuntimeError):
    """A rollout or video that cannot be done here; the message says why and the fix.

    Examples:
        >>> issubclass(RolloutError, RuntimeError)
        True
    """


def evaluate_policy(policy, env_id: str, *, episodes: int, seed: int, max_episode_steps: int | None = None,
                    reference: str = "odrl") -> dict[str, Any]:
    """Run ``episodes`` deterministic episodes of ``policy`` in ``env_id``; returns and normalised scores.

    Uses the pipeline's :class:`~tabb_torchrl.pipeline.PolicyEvaluator` (episode ``i`` reset with
    ``seed + i``, actions clipped to the bounds) and :func:`~tabb_torchrl.pipeline.normalized_scores`.

    Args:
        policy: a TensorDict module reading ``"observation"`` and writing ``"action"``
            (a :class:`~tabb_torchrl.api.Policy`, or any TorchRL actor).
        env_id: the env (a catalogue id or a gymnasium id with reference returns).

    Keyword Args:
        episodes (int): number of episodes.
        seed (int): the first episode's seed.
        max_episode_steps (int, optional): a shorter time limit (``None``: the env's own).
        reference (str): reference returns of the normalised score (``odrl`` | ``ours``).

    Returns:
        dict: ``env_id``, ``episodes``, ``seeds``, ``returns``, ``return_mean``, ``return_std``,
        ``normalized_scores``, ``normalized_score``, ``normalized_score_std``, ``reference``.

    Examples:
        >>> import torch
        >>> from tensordict.nn import TensorDictModule
        >>> zero = TensorDictModule(lambda obs: torch.zeros(obs.shape[0], 3), in_keys=["observation"],
        ...                         out_keys=["action"])
        >>> out = evaluate_policy(zero, "tabb/Hopper-morph-v0", episodes=2, seed=0, max_episode_steps=10)
        >>> len(out["returns"]), out["seeds"]
        (2, [0, 1])
    """
    from tabb_torchrl.pipeline.evaluation import PolicyEvaluator, normalized_scores

    device = getattr(policy, "device", "cpu")
    evaluator = PolicyEvaluator(env_id, int(episodes), seed=int(seed), device=device,
                                max_episode_steps=max_episode_steps)
    try:
        returns = evaluator.evaluate(policy)
    finally:
        evaluator.close()
    scores = normalized_scores(env_id, returns, reference)
    return {"env_id": env_id, "episodes": int(episodes), "seeds": [int(seed) + i for i in range(int(episodes))],
            "returns": [float(r) for r in returns], "return_mean": float(np.mean(returns)),
            "return_std": float(np.std(returns)), "normalized_scores": [float(s) for s in scores],
            "normalized_score": float(scores.mean()), "normalized_score_std": float(scores.std()),
            "reference": reference}


def _ffmpeg_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("imageio_ffmpeg") is not None


def check_video_path(path: str | os.PathLike) -> Path:
    """Check that a video can be written at ``path`` (its format and writer), before anything runs.

    Raises:
        RolloutError: no extension, ``imageio`` missing, or an ffmpeg format without ``imageio-ffmpeg``.

    Examples:
        >>> check_video_path("out.gif").suffix
        '.gif'
        >>> check_video_path("out")
        Traceback (most recent call last):
        ...
        tabb_torchrl.rollout.RolloutError: --video out has no extension. Fix: e.g. --video out.gif (or out.mp4 with imageio-ffmpeg installed).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if not suffix:
        raise RolloutError(f"--video {path} has no extension. Fix: e.g. --video {path}.gif (or {path}.mp4 with "
                           "imageio-ffmpeg installed).")
    try:
        import imageio  # noqa: F401
    except ImportError as err:  # pragma: no cover - imageio comes with gymnasium's extras here
        raise RolloutError(f"writing {path} needs imageio. Fix: pip install imageio (and imageio-ffmpeg for .mp4).") \
            from err
    if suffix not in PILLOW_FORMATS and not _ffmpeg_available():
        raise RolloutError(
            f"writing {path} ({suffix}) needs ffmpeg through the package imageio-ffmpeg, which is not installed. "
            f"Fix: pip install -e '.[video]' (imageio-ffmpeg), or write a GIF: --video {path.with_suffix('.gif')}."
        )
    return path


def _ensure_offscreen_gl() -> None:
    """Choose EGL for MuJoCo's offscreen rendering when nothing is chosen and there is no display."""
    if not os.environ.get("MUJOCO_GL") and not os.environ.get("DISPLAY") and sys.platform.startswith("linux"):
        os.environ["MUJOCO_GL"] = "egl"


def _render_env(env_id: str, size: int, max_episode_steps: int | None):
    from tabb_torchrl.envs import make_env

    _ensure_offscreen_gl()
    try:
        env = make_env(env_id, render_mode="rgb_array", width=int(size), height=int(size))
        if max_episode_steps is not None:
            import gymnasium as gym

            env = gym.wrappers.TimeLimit(env, max_episode_steps=int(max_episode_steps))
        env.reset(seed=0)
        frame = env.render()
    except Exception as err:  # MuJoCo / OpenGL raise many types (FatalError, RuntimeError, ImportError...)
        raise RolloutError(
            f"MuJoCo cannot render {env_id} offscreen here ({type(err).__name__}: {' '.join(str(err).split())[:300]}; "
            f"MUJOCO_GL={os.environ.get('MUJOCO_GL')!r}). Fix: MUJOCO_GL=egl (needs libEGL and a GPU driver or Mesa), "
            "or MUJOCO_GL=osmesa (needs libosmesa6), or run without --video."
        ) from err
    if frame is None or np.asarray(frame).ndim != 3:
        raise RolloutError(f"{env_id} rendered no image (got {type(frame).__name__}). Fix: run without --video.")
    return env


def record_video(policy, env_id: str, path: str | os.PathLike, *, seed: int, max_episode_steps: int | None = None,
                 size: int = 320, max_fps: int = MAX_VIDEO_FPS) -> dict[str, Any]:
    """Record one deterministic episode of ``policy`` in ``env_id`` into ``path`` (GIF or, with ffmpeg, MP4).

    Frames come from ``render_mode="rgb_array"`` (``size`` x ``size`` pixels), every k-th one so that
    the video plays in real time at no more than ``max_fps`` frames per second; the file is written
    atomically.

    Args:
        policy: a callable on numpy observations (a :class:`~tabb_torchrl.api.Policy`).
        env_id: the env.
        path: the video file (its extension picks the format, :func:`check_video_path`).

    Keyword Args:
        seed (int): the episode's reset seed.
        max_episode_steps (int, optional): a shorter time limit.
        size (int): frame width and height in pixels.
        max_fps (int): the highest frame rate written.

    Returns:
        dict: ``path``, ``frames``, ``fps``, ``return``, ``steps``.

    Raises:
        RolloutError: the format cannot be written, or MuJoCo cannot render here.
    """
    import imageio.v3 as iio

    from tabb_torchrl.io import atomic_path

    path = check_video_path(path)
    env = _render_env(env_id, size, max_episode_steps)
    try:
        render_fps = float(env.metadata.get("render_fps") or max_fps)
        stride = max(1, math.ceil(render_fps / max_fps))
        fps = render_fps / stride
        obs, _ = env.reset(seed=int(seed))
        frames, total, steps, done = [env.render()], 0.0, 0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(policy(np.asarray(obs, dtype=np.float32)))
            total += float(reward)
            steps += 1
            done = bool(terminated or truncated)
            if steps % stride == 0 or done:
                frames.append(env.render())
    finally:
        env.close()
    video = np.stack([np.asarray(f, dtype=np.uint8) for f in frames])
    with atomic_path(path, suffix=path.suffix) as tmp:
        if path.suffix.lower() in PILLOW_FORMATS:
            iio.imwrite(tmp, video, extension=path.suffix, duration=1000.0 / fps, loop=0)
        else:
            import imageio

            imageio.mimwrite(tmp, list(video), fps=fps, format=path.suffix.lstrip("."))
    return {"path": str(path), "frames": int(video.shape[0]), "fps": fps, "return": total, "steps": steps}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tabb_torchrl.rollout",
        description="Evaluate a trained policy (a run directory of recipes/tabb_offline.py or Agent.fit, or an "
                    "Agent.save file) in its target env; optionally record a video of one episode.",
    )
    p.add_argument("run", help="run directory (config.yaml + checkpoint.pt) or a file written by Agent.save")
    p.add_argument("--episodes", type=int, default=None, help="episodes (default: the run's eval.episodes)")
    p.add_argument("--seed", type=int, default=None,
                   help="first episode's seed (default: the run's seed + eval.seed_offset)")
    p.add_argument("--max-episode-steps", type=int, default=None,
                   help="time limit (default: the run's eval.max_episode_steps, else the env's own)")
    p.add_argument("--reference", choices=["odrl", "ours"], default=None,
                   help="reference returns of the normalised score (default: the run's eval.reference)")
    p.add_argument("--video", default=None, help="also record the first episode: out.gif, or out.mp4 (imageio-ffmpeg)")
    p.add_argument("--video-size", type=int, default=320, help="video frame width and height (pixels)")
    p.add_argument("--checkpoint", default=None, help="checkpoint file name in the run directory")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    return p


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status (0, or 2 with a message on stderr)."""
    args = _parser().parse_args(argv)
    for name in ("episodes", "max_episode_steps", "video_size", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            print(f"Argument error: --{name.replace('_', '-')} {value} must be >= 1.", file=sys.stderr)
            return 2
    import torch

    from tabb_torchrl.api import load_policy
    from tabb_torchrl.pipeline.config import ConfigError

    torch.set_num_threads(args.threads)
    try:
        if args.video:
            check_video_path(args.video)
        policy = load_policy(args.run, device=args.device, checkpoint=args.checkpoint)
    except (FileNotFoundError, ConfigError, RolloutError) as err:
        print(f"Error: {err}", file=sys.stderr)
        return 2
    cfg = policy.config
    episodes = args.episodes or int(cfg.eval.episodes)
    seed = args.seed if args.seed is not None else int(cfg.seed) + int(cfg.eval.seed_offset)
    max_steps = args.max_episode_steps if args.max_episode_steps is not None else cfg.eval.get("max_episode_steps")
    reference = args.reference or str(cfg.eval.reference)
    info = policy.info
    print(f"{cfg.algo.name} on {policy.env_id} (checkpoint phase {info['phase']}, RL step {info['rl_step']}): "
          f"{episodes} episode(s), seeds {seed}..{seed + episodes - 1}"
          f"{'' if max_steps is None else f', at most {max_steps} steps'}", flush=True)
    out = evaluate_policy(policy, policy.env_id, episodes=episodes, seed=seed, max_episode_steps=max_steps,
                          reference=reference)
    print(f"return: {out['return_mean']:.2f} ± {out['return_std']:.2f}")
    print(f"normalised score ({reference}): {out['normalized_score']:.2f} ± {out['normalized_score_std']:.2f}")
    if args.video:
        try:
            video = record_video(policy, policy.env_id, args.video, seed=seed, max_episode_steps=max_steps,
                                 size=args.video_size)
        except RolloutError as err:
            print(f"Error: {err}", file=sys.stderr)
            return 2
        print(f"video: {video['path']} ({video['frames']} frames at {video['fps']:.1f} fps; episode seed {seed}, "
              f"return {video['return']:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
