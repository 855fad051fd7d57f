"""The downloader's old home: re-exports ``amed.download`` (which sits below every module that downloads)."""

from ..download import DownloadError, cached_path, default_cache_dir, fetch, read_sidecar, sha256_file

__all__ = ["DownloadError", "fetch", "default_cache_dir", "cached_path", "sha256_file", "read_sidecar"]
