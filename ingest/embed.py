"""Embedders behind one factory (`build_embedder`): the accurate profile's MiniLM
(ingest.st_embed), the fast profile's static model2vec distillate of it (ingest.static_model), a
model folder of either kind, or the fake (ingest.fake_embed). What every embedder is and shares is
ingest.embed_base.

Every embedder returns L2-normalised float32 rows, so inner product is cosine. An embedder knows its
identity, dimension and window from its folder's files; the model itself (torch,
sentence-transformers, ONNX Runtime, a static table) loads on the first `embed`, so that `lectern
--help`, `lectern list` and a re-ingest with nothing to embed never pay for it. The chunker uses the
embedder's own tokenizer (`offsets`, ingest.wordpiece), so no chunk is truncated.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lectern.errors import EmbedderNotFound, UnknownKey
from lectern.ingest.embed_base import Embedder, packaged_minilm_path
from lectern.ingest.fake_embed import FakeEmbedder
from lectern.ingest.settings import DEFAULT_PROFILE, EmbedSettings
from lectern.ingest.st_embed import SentenceTransformerEmbedder
from lectern.ingest.static_model import StaticEmbedder, distilled_minilm


def prepare(profile: str, settings: EmbedSettings, models_dir: Path) -> str:
    """Build now what `profile` builds once per machine on its first use (`lectern prepare`), so that
    a first ingest is as fast as the next: the fast profile's static model; the accurate profile's
    ONNX export and the precision measured on this CPU. Returns what is ready, in one line."""
    try:
        embedder = PROFILES[profile](settings, models_dir)  # building the fast profile distils its model
    except KeyError:
        raise UnknownKey("embedding profile", profile, list(PROFILES)) from None
    if isinstance(embedder, StaticEmbedder):
        return f"{profile}: static model ready in {embedder.folder}"
    assert isinstance(embedder, SentenceTransformerEmbedder)
    embedder.embed_query("ready")  # the question path: ONNX Runtime's export where it runs there
    chosen = "measured on this CPU" if settings.precision == "auto" else "as set"
    return f"{profile}: documents embedded in {embedder.precision} ({chosen}), cached in {models_dir}"


def _accurate(settings: EmbedSettings, models_dir: Path) -> Embedder:
    return SentenceTransformerEmbedder(packaged_minilm_path(), settings, models_dir)


def _fast(settings: EmbedSettings, models_dir: Path) -> Embedder:
    return StaticEmbedder(distilled_minilm(models_dir), packaged_minilm_path())


PROFILES: dict[str, Callable[[EmbedSettings, Path], Embedder]] = {"accurate": _accurate, "fast": _fast}


def build_embedder(settings: EmbedSettings, models_dir: Path) -> Embedder:
    """The one place an embedder is made: `model` (a folder or `fake`) wins over `profile`."""
    if settings.model == "fake":
        return FakeEmbedder()
    if settings.model:
        folder = Path(settings.model).expanduser()
        if not folder.is_dir():
            raise EmbedderNotFound(
                settings.model, f"no folder {folder} (set ingest.embed.model to a model folder)"
            )
        if (folder / "modules.json").is_file() or (folder / "config_sentence_transformers.json").is_file():
            return SentenceTransformerEmbedder(folder, settings, models_dir)
        config = folder / "config.json"
        if config.is_file() and "hidden_dim" in json.loads(config.read_text()):
            return StaticEmbedder(folder, folder)
        return SentenceTransformerEmbedder(folder, settings, models_dir)
    profile = settings.chosen_profile or DEFAULT_PROFILE
    try:
        builder = PROFILES[profile]
    except KeyError:
        raise UnknownKey("embedding profile", profile, list(PROFILES)) from None
    return builder(settings, models_dir)


def table_folder(embedder: Embedder) -> str | None:
    """The static model a parse worker embeds with, from the pieces it cut (StaticEmbedder.table_folder)."""
    return embedder.table_folder if isinstance(embedder, StaticEmbedder) else None


def embedder_recipe(embedder: Embedder) -> Callable[[], Embedder]:
    """How another process (a Ray actor) builds this embedder again: its folder and settings, never
    its weights, which load there on the first batch. Another kind of embedder is sent as it is."""
    kind = type(embedder)
    if kind is SentenceTransformerEmbedder:
        st: Any = embedder
        return functools.partial(SentenceTransformerEmbedder, st.folder, st._settings, st.models_dir)
    if kind is StaticEmbedder:
        static: Any = embedder
        return functools.partial(StaticEmbedder, static.folder, static._tokenizer_file.parent)
    if kind is FakeEmbedder:
        return functools.partial(FakeEmbedder, embedder.dimension, embedder.max_tokens)
    return functools.partial(_same, embedder)


def _same(embedder: Embedder) -> Embedder:
    return embedder
