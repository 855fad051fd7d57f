"""Delete a teacher cache's shards (its metadata stays): every predictor trained from it exists. A training job that
reruns later finds the cache incomplete and rebuilds it first (`amed train --build-cache`, under the cache's lock)."""
import json
import os
import sys

from amed._io import atomic_write_bytes, read_json_object
from amed.cache import TeacherCache

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821 (snakemake injects it)
root = os.path.join(os.path.dirname(snakemake.input.manifest), "cache")  # noqa: F821
meta = read_json_object(os.path.join(root, "meta.json"), "teacher cache metadata")
meta.pop("shard_sha256", None)
freed = TeacherCache(root, meta).prune()
record = {"cache": root, "bytes_freed": freed, "trained_from_it": list(snakemake.input.records)}  # noqa: F821
atomic_write_bytes(snakemake.output[0], (json.dumps(record, indent=1) + "\n").encode())  # noqa: F821
print(f"pruned {root}: {freed} bytes freed")
