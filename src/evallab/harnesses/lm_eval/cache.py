"""The lab's request cache around lm-eval models: finished requests survive a crashed server."""

from __future__ import annotations

import inspect
import os
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from evallab.harnesses.lm_eval.client import LmEvalModel

__all__ = ["BatchedCommitDict", "cached_lm"]


class BatchedCommitDict:
    """lm-eval's request cache with commits batched instead of one fsync per request.

    lm-eval opens its cache with ``autocommit=True``: every finished request is a SQLite commit,
    which costs more than the request itself on a fast server. Here writes are committed every
    ``every`` writes or ``interval_s`` seconds, and always when a harness call ends or fails, so
    a crashed server still leaves every finished request in the cache.
    """

    def __init__(self, path: str, every: int = 512, interval_s: float = 5.0) -> None:
        from sqlitedict import SqliteDict

        self._db = SqliteDict(path, autocommit=False)
        self._every = every
        self._interval = interval_s
        self._pending = 0
        self._last = time.monotonic()

    def __contains__(self, key: object) -> bool:
        return key in self._db

    def __getitem__(self, key: str) -> Any:
        return self._db[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._db[key] = value
        self._pending += 1
        if self._pending >= self._every or time.monotonic() - self._last > self._interval:
            self.commit()

    def commit(self) -> None:
        self._db.commit()
        self._pending = 0
        self._last = time.monotonic()

    def close(self) -> None:
        self.commit()
        self._db.close()


def cached_lm(lm: LmEvalModel, cache_path: Path) -> tuple[Any, BatchedCommitDict]:
    """The runtime's lm-eval model behind the lab's request cache (finished requests survive)."""
    from lm_eval.api.registry import get_model

    inner = lm.instance
    if inner is None:
        inner = get_model(lm.model_type).create_from_arg_obj(
            lm.model_args, {"batch_size": lm.batch_size}
        )
    store = BatchedCommitDict(str(cache_path))
    return _cached_lm_class()(inner, store), store


@lru_cache(maxsize=1)
def _cached_lm_class() -> type:
    """Build the caching LM class lazily (lm-eval is a heavy import)."""
    from lm_eval.api.model import LM, CacheHook, hash_args

    class CachedLM(LM):
        """Serves requests already answered from the cache; sends the rest to ``inner``.

        Requests with sampling are never cached (repeats must differ).
        """

        def __init__(self, inner: Any, store: BatchedCommitDict) -> None:
            super().__init__()
            self.inner = inner
            self.store = store
            hook = CacheHook(None)
            hook.dbdict = store  # type: ignore[assignment]
            inner.set_cache_hook(hook)

        def _serve(self, attr: str, requests: list[Any]) -> list[Any]:
            answers: list[Any] = [None] * len(requests)
            todo: list[int] = []
            for i, req in enumerate(requests):
                sampled = attr == "generate_until" and bool(req.args[1].get("do_sample", False))
                key = hash_args(attr, req.args)
                if not sampled and key in self.store:
                    answers[i] = self.store[key]
                else:
                    todo.append(i)
            if todo:
                method = getattr(self.inner, attr)
                # lm-eval's models pass ``disable`` to tqdm explicitly, which overrides
                # TQDM_DISABLE; the lab's CLI draws its own bar, so ask them directly.
                quiet = os.environ.get("TQDM_DISABLE", "") not in ("", "0", "false", "False")
                kwargs = (
                    {"disable_tqdm": True}
                    if quiet and "disable_tqdm" in inspect.signature(method).parameters
                    else {}
                )
                fresh = method([requests[i] for i in todo], **kwargs)
                for i, answer in zip(todo, fresh, strict=True):
                    answers[i] = answer
                    self.store[hash_args(attr, requests[i].args)] = answer
            self.store.commit()
            return answers

        def loglikelihood(self, requests: list[Any], *args: Any, **kw: Any) -> list[Any]:
            return self._serve("loglikelihood", requests)

        def loglikelihood_rolling(self, requests: list[Any], *args: Any, **kw: Any) -> list[Any]:
            return self._serve("loglikelihood_rolling", requests)

        def generate_until(self, requests: list[Any], *args: Any, **kw: Any) -> list[Any]:
            return self._serve("generate_until", requests)

        def apply_chat_template(self, *args: Any, **kw: Any) -> Any:
            return self.inner.apply_chat_template(*args, **kw)

        def chat_template(self, *args: Any, **kw: Any) -> Any:
            return self.inner.chat_template(*args, **kw)

        @property
        def tokenizer_name(self) -> str:
            return str(self.inner.tokenizer_name)

        @property
        def rank(self) -> int:
            return int(self.inner.rank)

        @property
        def world_size(self) -> int:
            return int(self.inner.world_size)

        @property
        def device(self) -> Any:
            return getattr(self.inner, "device", None)

        def __getattr__(self, name: str) -> Any:
            # Anything else (tokenizer, config, get_model_info...) is the runtime model's.
            if name in {"inner", "store"}:
                raise AttributeError(name)
            return getattr(self.inner, name)

    return CachedLM
