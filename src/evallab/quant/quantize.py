"""Quantize an F16 GGUF with llama.cpp's own quantizer, run in the llama.cpp runtime's virtualenv.

The lab's environment doesn't hold ``llama_cpp``: the runtime virtualenv (``evallab runtime
install llamacpp==VERSION``) does, so quantization runs there as a subprocess, with the same
library build that later serves the file.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from evallab.errors import ModelError
from evallab.quant.formats import QUANT_TYPES, llama_ftype_name, normalize_quant
from evallab.runtimes.venvs import InstalledRuntime

__all__ = ["LlamaCppQuantizer"]

# Runs inside the runtime's Python: argv = source, destination, LLAMA_FTYPE name, threads,
# allow_requantize (0/1).
_SCRIPT = """
import ctypes, json, sys
import llama_cpp
src, dst, ftype, nthread = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = getattr(llama_cpp, "LLAMA_FTYPE_" + ftype)
params.nthread = nthread
params.allow_requantize = sys.argv[5] == "1"
rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))
print(json.dumps({"rc": int(rc), "version": llama_cpp.__version__}))
sys.exit(0 if rc == 0 else 1)
"""


@dataclass(frozen=True)
class LlamaCppQuantizer:
    """llama.cpp's ``llama_model_quantize`` in one Python environment that has ``llama_cpp``.

    Attributes:
        python: The interpreter of the runtime virtualenv.
        package: The distribution providing ``llama_cpp`` (``llama-cpp-python``).
        version: Its version; with ``commit``, recorded as the quantizer of every file it makes.
        env: Environment for the subprocess (the lab's own Python settings removed).
        commit: The llama.cpp commit the package was built from, when it records one.
    """

    python: Path
    package: str
    version: str
    env: dict[str, str]
    commit: str = ""

    @classmethod
    def from_runtime(cls, runtime: InstalledRuntime) -> LlamaCppQuantizer:
        """The quantizer of an installed llama.cpp runtime virtualenv."""
        return cls(
            python=Path(runtime.python),
            package=runtime.package,
            version=runtime.version,
            env=runtime.server_env(),
            commit=runtime.commit,
        )

    @property
    def label(self) -> str:
        """``package==version`` (plus ``@commit`` when known): recorded as provenance."""
        pin = f"{self.package}=={self.version}"
        return f"{pin}@{self.commit}" if self.commit else pin

    def quantize(
        self, src: Path, dst: Path, quant: str, *, threads: int = 0, requantize: bool = False
    ) -> Path:
        """Quantize the F16/F32 GGUF ``src`` to ``quant`` at ``dst`` (atomically).

        ``requantize`` lets ``src`` be an already quantized file (llama.cpp dequantizes it first,
        so the result carries both roundings: a shipped Q4_1 made lower, not a fresh quant).

        Raises:
            ModelError: ``quant`` isn't a llama.cpp quant type, or the quantizer failed (its log
                is kept next to ``dst``).
        """
        label = normalize_quant(quant)
        if label not in QUANT_TYPES:
            raise ModelError(
                f"{quant} isn't made by llama.cpp's quantizer",
                value=quant,
                fix=f"use one of: {', '.join(QUANT_TYPES)}",
            )
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
        log = dst.with_name(dst.name + ".log")
        cmd = [str(self.python), "-c", _SCRIPT, str(src), str(tmp), llama_ftype_name(label)]
        cmd += [str(threads or os.cpu_count() or 1), "1" if requantize else "0"]
        try:
            with log.open("wb") as fh:
                proc = subprocess.run(
                    cmd, stdout=subprocess.PIPE, stderr=fh, env=self.env, check=False
                )
            report = _last_json(proc.stdout.decode(errors="replace"))
            if proc.returncode != 0 or report.get("rc") != 0:
                from evallab.runtimes.process import log_tail

                raise ModelError(
                    f"llama.cpp's quantizer failed (exit {proc.returncode}): {log_tail(log, 8)}",
                    value=src,
                    fix=f"read {log}; check the runtime with `evallab runtime list`",
                )
            if report.get("version") != self.version:
                raise ModelError(
                    f"the runtime's llama_cpp reports version {report.get('version')}, "
                    f"registered as {self.version}",
                    value=self.python,
                    fix=f"reinstall it with `evallab runtime install llamacpp=={self.version} "
                    "--force`",
                )
            os.replace(tmp, dst)
        finally:
            tmp.unlink(missing_ok=True)
        return dst


def _last_json(stdout: str) -> dict[str, object]:
    for line in reversed(stdout.strip().splitlines()):
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict):
            return data
    return {}
