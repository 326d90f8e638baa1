"""SAMed inference on Ray actors (``gazeprep anatomy predict --executor ray``).

Each actor loads the model once (on its GPU when the cluster has GPUs: ``num_gpus=1`` per actor,
one actor per GPU; otherwise CPU actors) and runs the same batch function as the local loop,
:func:`gazeprep.anatomy.segment.segment_loaded`. The driver consumes the batches *in submission
order* and appends them to the same resumable :class:`~gazeprep.anatomy.store.MaskStore`, so the
store is identical to a local run's; resume works the same way (images already in the index are
never submitted). A batch whose actor died is retried by Ray (``max_task_retries``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from pathlib import Path

from gazeprep.errors import GazeprepError


class _Segmenter:
    """Holds one model; ``run(records)`` loads and segments one batch."""

    def __init__(self, model_dir: str, device: str, images_root: str, mask_size: int, dataset: str):
        from gazeprep.anatomy.model import load_model
        from gazeprep.device import resolve_device

        self.model = load_model(Path(model_dir))
        self.dev = resolve_device(device)
        self.model.to(self.dev).eval()
        self.images_root = images_root
        self.mask_size = mask_size
        self.dataset = dataset

    def run(self, records):
        from gazeprep.anatomy.segment import load_record, segment_loaded

        size = self.model.config.image_size
        loaded = [load_record(r, self.images_root, size) for r in records]
        return segment_loaded(self.model, self.dev, loaded, self.mask_size, self.dataset)


def segment_on_ray(
    model_dir: str | Path,
    chunks: list[list],
    images_root: str | Path,
    *,
    dataset: str,
    mask_size: int,
    device: str = "auto",
    address: str | None = None,
    n_actors: int | None = None,
    in_flight_per_actor: int = 2,
) -> Iterator[tuple]:
    """Yield ``segment_loaded`` results for ``chunks`` in order, computed on Ray actors.

    ``n_actors`` defaults to the cluster's GPU count, else half its CPUs (at least 1).
    """
    try:
        import ray
    except ImportError:
        raise GazeprepError("--executor ray needs the distributed extra: pip install 'gazeprep[distributed]'") from None
    started = False
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
        started = True
    try:
        res = ray.cluster_resources()
        gpus = int(res.get("GPU", 0))
        if n_actors is None:
            n_actors = gpus if gpus else max(1, int(res.get("CPU", 1)) // 2)
        opts = {"num_gpus": 1} if gpus else {"num_cpus": 1}
        actor_cls = ray.remote(max_restarts=2, max_task_retries=2, **opts)(_Segmenter)
        dev = device if gpus else "cpu"
        actors = [actor_cls.remote(str(model_dir), dev, str(images_root), mask_size, dataset) for _ in range(n_actors)]
        pending: deque = deque()
        nxt = 0
        while nxt < len(chunks) or pending:
            while nxt < len(chunks) and len(pending) < n_actors * in_flight_per_actor:
                pending.append(actors[nxt % n_actors].run.remote(chunks[nxt]))
                nxt += 1
            yield ray.get(pending.popleft())
    finally:
        if started:
            ray.shutdown()
