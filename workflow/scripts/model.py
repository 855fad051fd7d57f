"""Materialise and verify one dataset's checkpoint (download + sha256 check happen in amed.load_model)."""
import json
import sys
import time

from amed._io import atomic_write_bytes

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821 (snakemake injects it)
import amed  # noqa: E402

name = snakemake.params.model  # noqa: F821
t0 = time.perf_counter()
model = amed.load_model(name)
info = getattr(model, "info", None)
record = {"model": name, "seconds": round(time.perf_counter() - t0, 3)}
if info is not None:
    d = info._asdict() if hasattr(info, "_asdict") else dict(getattr(info, "__dict__", {}))
    record.update({k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()
                   if isinstance(v, (str, int, float, bool, tuple, list, type(None)))})
atomic_write_bytes(snakemake.output[0], (json.dumps(record, indent=1, default=str) + "\n").encode())  # noqa: F821
print(f"model {name}: verified in {record['seconds']} s")
