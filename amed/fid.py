"""The Frechet distance (FID) API in one import: re-exports the modules that hold it.

* ``amed.frechet``: the distance, feature statistics and the EDM-format statistics files;
* ``amed.inception``: the Inception-v3 network (two sources) and its image features;
* ``amed.coco``: Table 3's MS-COCO val2014 reference statistics;
* ``amed.reference``: how the reference statistics of a dataset are made (``reference_stats``).

Import from here (``amed.fid.frechet_distance``) or from the module that holds a name.
"""

from __future__ import annotations

from .coco import COCO_IMAGES_LICENSE, COCO_VAL2014_URL, coco_image, coco_reference_stats
from .frechet import (PSD_TOL, STATS_LIMIT, FeatureMoments, feature_stats, frechet_distance, load_stats,
                      save_features, save_stats, stats_info)
from .inception import (INCEPTION_DIM, INCEPTION_FILE, INCEPTION_SOURCES, INCEPTION_URL, WHEEL_FILE, WHEEL_LICENSE,
                        WHEEL_PIN, WHEEL_SHA256, InceptionUnavailable, TFInception, inception_features,
                        inception_source, inception_stats, to_rgb32)
from .reference import reference_stats

__all__ = [
    "frechet_distance",
    "feature_stats",
    "save_stats",
    "load_stats",
    "stats_info",
    "inception_features",
    "inception_stats",
    "inception_source",
    "to_rgb32",
    "TFInception",
    "InceptionUnavailable",
    "INCEPTION_SOURCES",
    "FeatureMoments",
    "coco_image",
    "coco_reference_stats",
    "COCO_VAL2014_URL",
    "save_features",
    "reference_stats",
    # constants callers read here too: statistics limits, the Inception sources' files and pins, the COCO licence
    "PSD_TOL", "STATS_LIMIT", "INCEPTION_DIM", "INCEPTION_FILE", "INCEPTION_URL", "WHEEL_FILE", "WHEEL_LICENSE",
    "WHEEL_PIN", "WHEEL_SHA256", "COCO_IMAGES_LICENSE",
]
