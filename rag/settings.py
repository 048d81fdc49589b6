"""The one settings root: defaults < data-dir settings.toml < ./lectern.toml < LECTERN_* env < CLI flags.

Built once at the edge (CLI, UI, server, Workspace) and passed down; nothing deeper reads the
environment. Nested fields use `__` in the environment: LECTERN_LLM__BACKEND=fake.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

import pydantic_settings
from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from lectern.errors import SettingsError
from lectern.ingest.atomic import atomic_write_text
from lectern.ingest.settings import IngestSettings, StoreSettings
from lectern.rag.limits import CANDIDATES_MAX, K_MAX, QUESTION_TOKENS

RetrievalMode = Literal["hybrid", "dense", "bm25"]
QAPrompt = Literal[
    "concise", "concise_example", "zero_shot", "few_shot", "chain_of_thought"
]  # the keys of rag.prompts.QA_PROMPTS
SETTINGS_FILE = "settings.toml"
LOCAL_FILE = "lectern.toml"


def default_data_dir() -> Path:
    """A per-user folder (XDG on Linux); override with LECTERN_DATA_DIR or --data-dir."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "lectern"


def default_cache_dir() -> Path:
    """A per-user cache (XDG on Linux) for models built from packaged ones, shared by every data dir;
    override with LECTERN_CACHE_DIR."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lectern"


class RetrievalSettings(BaseModel):
    """How chunks are found for a question (rag.retrieval)."""

    mode: RetrievalMode = Field("hybrid", description="`hybrid` (dense and BM25 fused), `dense` or `bm25`.")
    k: int = Field(5, ge=1, le=K_MAX, description="Chunks retrieved for a question.")
    fetch_k: int = Field(
        50, ge=1, le=1000, description="Candidates each search returns before fusion and MMR."
    )
    mmr: bool = Field(False, description="Diversify the `k` chunks by maximal marginal relevance.")
    mmr_lambda: float = Field(
        0.5, ge=0.0, le=1.0, description="MMR's balance: 1 relevance alone, 0 diversity alone."
    )
    # Tuned on CMU S08 (bench/retrieval_quality.py); S09 is the held-out check.
    dense_weight: float = Field(
        0.4, ge=0.0, description="The dense score's weight in hybrid fusion (tuned on CMU S08)."
    )
    bm25_weight: float = Field(
        0.6, ge=0.0, description="The BM25 score's weight in hybrid fusion (tuned on CMU S08)."
    )
    min_score: float = Field(
        0.0, description="Hits scoring below this are dropped (lectern's own fusion's scale)."
    )
    reranker: str | None = Field(
        None,
        description="A local cross-encoder folder that reorders the best `rerank_candidates` hits and keeps "
        "`k` (none is packaged).",
    )
    rerank_candidates: int = Field(20, ge=1, le=CANDIDATES_MAX, description="Hits the reranker reorders.")
    spelling: bool = Field(
        True,
        description="A question word the collection never saw is read as its commonest word one edit away "
        '("Netwon" as "Newton") for BM25 and the evidence check (rag.retrieval.Searcher.spelled).',
    )


AnswerContext = Literal["sentences", "chunks"]
AnswerOrder = Literal["rank", "best"]  # rag.sentences.ORDERS
EvidenceGate = Literal["meaning", "words", "coverage"]  # rag.evidence.MEANING, WORDS, COVERAGE_ONLY


class AnswerSettings(BaseModel):
    """How questions are put to the model (ask, chat, the web UI and `lectern eval answers`).
    docs/ANSWERS.md measures each choice; the defaults are the best on CMU S08."""

    prompt: QAPrompt = Field(
        "concise",
        description="`concise` (one short sentence in the source's words), `concise_example` (the same after "
        "one worked exchange), `zero_shot`, `few_shot` or `chain_of_thought` (`--prompt`).",
    )
    structured: bool = Field(
        False, description="A JSON answer with citation numbers, validated (rag.qa.StructuredAnswer)."
    )
    json_schema: Path | None = Field(
        None,
        description="With `structured`, decoding follows this JSON schema file (an object with a string "
        '"answer"; unset: {"answer", "citations"}) on the local and llamacpp backends.',
    )
    context: AnswerContext = Field(
        "sentences",
        description="What the model is shown of the `k` chunks: their best `sentences` with neighbours, or "
        "the whole `chunks`.",
    )
    # the same defaults as rag.sentences.SENTENCES / NEIGHBOURS, which this module does not import
    sentences: int = Field(
        6, ge=1, le=50, description="With `sentences`: how many best sentences (docs/ANSWERS.md, sixth run)."
    )
    neighbours: int = Field(
        1, ge=0, le=10, description="With `sentences`: neighbours shown either side of each."
    )
    order: AnswerOrder = Field(
        "best",
        description="With `sentences`: the excerpt holding the best-matching sentence first (+4 of 180 S08 "
        "questions, +2 of 60 on S09, docs/ANSWERS.md, eighth run), or `rank`, the chunks' retrieval rank.",
    )
    evidence: bool = Field(
        True,
        description="Abstain without asking the model when the retrieved passages are not about the question "
        "(calibrated on CMU S08 and reworded S08 questions by bench/calibrate_evidence.py).",
    )
    # the fits are on MiniLM's cosine scale; "coverage" is the gate every collection got before
    # docs/ANSWERS.md's tenth run
    gate: EvidenceGate = Field(
        "meaning",
        description="What the evidence check reads: `meaning`, the best passage's and sentence's closeness to "
        "the question (MiniLM) and its names in them, so a question in your own words passes; `words`, its "
        "rarer words in the best passage and that passage's closeness; `coverage`, the rarer words alone (the "
        "only one with an embedder other than the `accurate` profile's).",
    )
    evidence_threshold: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="The check's probability threshold (unset: the fit's): lower answers more questions and "
        "lets more through when the documents lack the answer.",
    )
    meaning: float = Field(
        0.0,
        ge=0.0,
        le=100.0,
        description="How much a sentence's closeness in meaning to the question (MiniLM) counts beside the "
        "question's words it holds when choosing what the model is shown (0: words alone; 1.0 showed 49 of "
        "60 reworded S08 questions their answer against 39, but the 0.5B answered fewer held-out ones, "
        "docs/ANSWERS.md).",
    )
    by_meaning: int = Field(
        0,
        ge=0,
        le=20,
        description="This many more sentences, the closest in meaning to the question that its words did not "
        "choose, shown after those, which keep their places (docs/ANSWERS.md, twelfth run).",
    )
    facts: bool = Field(
        False,
        description='A "when" or "how many" answer whose date or number is not the one the best-matching '
        "sentence states is asked again with that sentence alone (measured: no gain with the 0.5B).",
    )
    verify: bool = Field(
        True,
        description="An answer that only restates the question, or whose words no source holds, is asked once "
        "for a source's exact words, which lectern finds and cites, or the answer abstains.",
    )
    together: bool = Field(
        False,
        description="With `verify`: an answer whose new words no one passage holds together (a sentence and "
        "its neighbours) is asked again the same way, and kept if that finds nothing better.",
    )
    # the names rule alone (docs/ANSWERS.md, fourteenth run): on S08 and S09, CMU wording and reworded,
    # it withdrew 5 wrong answers and no right one, and declined 3 more hidden-article questions
    subject: bool = Field(
        True,
        description="An answer whose cited passages do not hold half of the names the question asks about "
        "(their titles count) is withdrawn (`abstained_by = off_subject`): an answer from another article is "
        "no answer.",
    )
    max_question_tokens: int = Field(
        QUESTION_TOKENS,
        ge=1,
        description="A longer question is a clear error (a long paste took minutes to prefill).",
    )


UnsupportedSentences = Literal["mark", "drop"]  # rag.summarize.UNSUPPORTED


class SummarySettings(BaseModel):
    """How a summary's sentences are checked against the passages summarized (rag.faithful)."""

    # the answers' own threshold, rag.citations.SUPPORTED, which this module does not import
    support: float = Field(
        0.6,
        ge=0.0,
        le=1.0,
        description="The rarity-weighted share of a summary sentence's words its best passage must hold "
        "(docs/SUMMARIZE.md).",
    )
    unsupported: UnsupportedSentences = Field(
        "mark",
        description="A summary sentence below `support` is shown marked `[not in the sources]`, or left out "
        "(`drop`; `--unsupported`).",
    )


class LLMSettings(BaseModel):
    """Which model answers. `model` is `packaged:NAME` (`packaged:auto` picks one for this machine),
    a model folder, a hub id a user already has cached, or a .gguf file; for the `openai` backend,
    the served model's name."""

    # rag.llm.LLM_BACKENDS; auto's rule: rag.llm.choose_backend
    backend: str = Field(
        "auto",
        description="`auto` runs a GGUF model on `llamacpp` on a CPU (`lectern serve` too: it batches "
        "llama.cpp continuously) and `local` (transformers) for a model folder, a LoRA adapter and a CUDA "
        "GPU, saying which and why; or `llamacpp`, `local`, `openai` (any OpenAI-compatible server) or "
        "`fake` (docs/LLM.md).",
    )
    model: str = Field(
        "packaged:auto",
        description="`packaged:auto` picks `packaged:qwen2.5-1.5b` (when installed) with a GPU or where "
        "llama.cpp measured a typical answer within 7.3 s, else `packaged:qwen2.5-0.5b`; or "
        "`packaged:smollm2`, a packaged name, a model folder, a cached hub id or a `.gguf` (rag.models).",
    )
    base_url: str | None = Field(None, description="For `openai`: the server's URL up to `/v1`.")
    api_key: SecretStr | None = Field(None, description="For `openai`: sent as `Authorization: Bearer`.")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0: greedy, reproducible answers.")
    repetition_penalty: float = Field(1.1, ge=1.0, le=2.0, description="Penalty on tokens already generated.")
    max_new_tokens: int = Field(256, ge=1, description="The longest reply, in tokens.")
    context_window: int | None = Field(
        None,
        ge=256,
        description="The model's window in tokens (unset: the model's own, capped at 4096 on a CPU, where a "
        "prompt of Qwen's full 32k would take minutes to prefill; 4096 for a server).",
    )
    device: str = Field("auto", description="`auto`, `cpu` or `cuda`.")
    dtype: str = Field(
        "auto",
        description="`auto`: bf16 on CUDA (fp16 where missing); on a CPU bf16 where it has bf16 instructions "
        "(answers 2x faster, docs/LLM.md), else fp32.",
    )
    threads: int | None = Field(
        None,
        ge=1,
        description="CPU threads (unset: every core on `local`, the physical cores on `llamacpp`).",
    )
    gpu_layers: int | None = Field(
        None,
        ge=-1,
        description="`llamacpp`: layers offloaded to the GPU of a CUDA (or Metal, Vulkan) build, -1 all "
        "(unset: all where llama.cpp has GPU offload and `device` is not `cpu`).",
    )
    batch_size: int = Field(8, ge=1, description="Prompts generated together in a batch (map-reduce, serve).")
    timeout_s: float = Field(120.0, gt=0.0, description="For `openai`: seconds to wait for the server.")
    tokenizer: str | None = Field(
        None,
        description="For `openai`: a local tokenizer folder or cached hub id for exact token counts "
        "(unset: over-estimated, one per 3 bytes).",
    )
    adapter: str | None = Field(
        None,
        description="A PEFT LoRA adapter folder for the local model (`--adapter`; rag.llm.adapters).",
    )
    merge_adapter: bool = Field(
        False,
        description="Merge the adapter into the base weights at load (a little faster per token) instead of "
        "keeping it apart, switchable.",
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LECTERN_", env_nested_delimiter="__", extra="ignore", validate_default=True
    )

    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="Collections, conversations and uploads (`$XDG_DATA_HOME/lectern`, else "
        "`~/.local/share/lectern`).",
    )
    cache_dir: Path = Field(
        default_factory=default_cache_dir,
        description="Everything made from model files, shared by every data dir: converted GGUF models, the "
        "`fast` profile's static model, ONNX exports, the CPU precision measured (`$XDG_CACHE_HOME/lectern`, "
        "else `~/.cache/lectern`).",
    )
    collection: str = Field("default", description="The collection commands use (`--collection`, `-c`).")
    ingest: IngestSettings = IngestSettings()
    store: StoreSettings = StoreSettings()
    retrieval: RetrievalSettings = RetrievalSettings()
    answer: AnswerSettings = AnswerSettings()
    summary: SummarySettings = SummarySettings()
    llm: LLMSettings = LLMSettings()

    @field_validator("data_dir", "cache_dir", mode="before")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        """LECTERN_DATA_DIR= (empty) made the current folder the data dir, silently."""
        if isinstance(value, str) and not value.strip():
            raise ValueError("is empty: unset it, or name a folder")
        return value

    @field_validator("data_dir", "cache_dir")
    @classmethod
    def _a_folder(cls, value: Path) -> Path:
        """A data dir that is a regular file listed as an empty collection, with exit 0."""
        if value.exists() and not value.is_dir():
            raise ValueError(f"{value} is not a folder")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        local = Path(LOCAL_FILE)
        for path in (local, _data_dir_hint(init_settings, local) / SETTINGS_FILE):
            if path.is_file():
                sources.append(InitSettingsSource(settings_cls, init_kwargs=read_settings_file(path)))
        return tuple(sources)

    @property
    def collections_dir(self) -> Path:
        return self.data_dir / "collections"

    @property
    def models_dir(self) -> Path:
        """Everything made from model files, kept in the user's cache and shared by every data dir:
        GGUF models converted for transformers (a GB or two each), joined packaged parts, the fast
        profile's static model, ONNX exports and the CPU precision measured. None of it is the
        user's data, so a new data dir (a test's, a second library) builds none of it again."""
        return self.cache_dir / "models"

    def save(self) -> Path:
        """Store the user-facing settings that differ from the defaults in the data directory, shared
        by the UI and the CLI (a file of every default hid the two values a person had chosen)."""
        data = self.model_dump(**_DUMP)
        if self.llm.api_key is not None:
            data["llm"]["api_key"] = self.llm.api_key.get_secret_value()
        if self.store.token is not None:
            data["store"]["token"] = self.store.token.get_secret_value()
        return write_settings(self.data_dir, data)


_DUMP: dict[str, Any] = {"mode": "json", "exclude": {"data_dir", "cache_dir"}, "exclude_none": True}


def write_settings(data_dir: Path, data: dict[str, Any]) -> Path:
    """Write `data` (settings as tables, secrets in clear) to settings.toml in `data_dir`, keeping only
    what differs from the defaults. The web UI writes the file's tables with its own values through
    this, so the environment's LECTERN_* values are not saved with them."""
    path = data_dir / SETTINGS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    changed = _changed(data, Settings.model_construct().model_dump(**_DUMP))
    atomic_write_text(path, _to_toml(changed), perms=0o600)  # it may hold the API key
    return path


def _data_dir_hint(init_settings: PydanticBaseSettingsSource, local: Path) -> Path:
    """Where the saved settings live, looked up before the settings themselves are built."""
    given = init_settings().get("data_dir")
    if given:
        return Path(given)
    if os.environ.get("LECTERN_DATA_DIR"):
        return Path(os.environ["LECTERN_DATA_DIR"])
    if local.is_file():
        value = read_settings_file(local).get("data_dir")
        if value:
            return Path(value)
    return default_data_dir()


def read_settings_file(path: Path) -> dict[str, Any]:
    """A settings file's table, checked: UTF-8, TOML and every key one the settings have. Anything
    else is a SettingsError naming the file, the line and the key (a typo is never ignored)."""
    path = path.resolve()
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise SettingsError(path, f"cannot be read: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise SettingsError(path, "not UTF-8 text (a binary file?)", line) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        at = re.search(r"\s*\(at line (\d+), column \d+\)", str(e))
        line = int(at.group(1)) if at else text.count("\n") + 1
        reason = str(e)[: at.start()] if at else str(e)
        raise SettingsError(path, f"not valid TOML: {reason}", line) from None
    _check_keys(data, Settings, path, text, ())
    return data


def _check_keys(
    data: dict[str, Any], model: type[BaseModel], path: Path, text: str, at: tuple[str, ...]
) -> None:
    for key, value in data.items():
        field = model.model_fields.get(key)
        dotted = ".".join((*at, key))
        if field is None:
            close = difflib.get_close_matches(key, list(model.model_fields), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(model.model_fields)}"
            raise SettingsError(path, f"unknown key {dotted!r}{hint}", _line_of(text, (*at, key)), dotted)
        inner = field.annotation
        if isinstance(value, dict) and isinstance(inner, type) and issubclass(inner, BaseModel):
            _check_keys(value, inner, path, text, (*at, key))


def _line_of(text: str, key: tuple[str, ...]) -> int | None:
    """The line of a TOML file where a (dotted) key or table is set: good enough for an error message."""

    def parts(name: str) -> tuple[str, ...]:
        return tuple(p.strip().strip("\"'") for p in name.split("."))

    table: tuple[str, ...] = ()
    for number, line in enumerate(text.splitlines(), 1):
        header = re.match(r"\s*\[\[?([^\]]+)\]", line)
        if header:
            table = parts(header.group(1))
            found = table
        elif assignment := re.match(r"""\s*([\w\-."' ]+?)\s*=""", line):
            found = table + parts(assignment.group(1))
        else:
            continue
        if found[: len(key)] == key:
            return number
    return None


def _changed(data: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """The entries of `data` that differ from `defaults`, tables compared key by key."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if value is None:  # unset: the default
            continue
        default = defaults.get(key)
        if isinstance(value, dict) and isinstance(default, dict):
            if nested := _changed(value, default):
                out[key] = nested
        elif value != default or key not in defaults:
            out[key] = value
    return out


def _to_toml(data: dict[str, Any], prefix: str = "") -> str:
    """A small TOML writer for our flat-and-nested settings (tomllib reads, nothing in stdlib writes)."""
    scalars, tables = [], []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            scalars.append(f"{key} = {_toml_value(value)}")
    out = []
    if scalars:
        if prefix:
            out.append(f"[{prefix}]")
        out.extend(scalars)
        out.append("")
    for key, value in tables:
        out.append(_to_toml(value, f"{prefix}.{key}" if prefix else key))
    return "\n".join(out)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def settings_files(settings: Settings) -> list[Path]:
    """The settings files these settings were read from (./lectern.toml, then the data dir's)."""
    local, saved = Path(LOCAL_FILE), settings.data_dir / SETTINGS_FILE
    return [p.resolve() for p in (local, saved) if p.is_file()]


def remote_llm_notice(settings: Settings) -> str | None:
    """A warning when retrieved passages would go to a model server off this machine whose address
    came from ./lectern.toml in the current folder, not from the environment or the data dir's settings (a lectern.toml in a downloaded folder must not send them silently)."""
    from urllib.parse import urlsplit

    from lectern.exposure import is_loopback

    llm = settings.llm
    if llm.backend != "openai" or not llm.base_url or is_loopback(urlsplit(llm.base_url).hostname or ""):
        return None
    if os.environ.get("LECTERN_LLM__BASE_URL"):
        return None  # given in this shell's environment
    local = Path(LOCAL_FILE)
    try:
        from_local = (
            local.is_file() and read_settings_file(local).get("llm", {}).get("base_url") == llm.base_url
        )
    except SettingsError:
        from_local = False
    if not from_local:
        return None
    return (
        f"retrieved passages will be sent to {llm.base_url}, a server off this machine named in "
        f"{local.resolve()}; remove it there, or set it as LECTERN_LLM__BASE_URL or in the data dir's "
        "settings.toml to silence this"
    )


def load_settings(**overrides: Any) -> Settings:
    """Build the settings root; `overrides` are the CLI flags (highest precedence). A value out of
    range that came from a file or a variable is a SettingsError naming it (and the line)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except pydantic_settings.SettingsError as e:  # LECTERN_INGEST='{bad json'
        field = re.search(r'field "([^"]+)"', str(e))
        name = field.group(1) if field else "?"
        cause = f" ({e.__cause__})" if e.__cause__ else ""
        raise SettingsError(f"LECTERN_{name.upper()}", f"not valid JSON{cause}", key=name) from None
    except ValidationError as e:
        problem = e.errors()[0]
        key = tuple(str(part) for part in problem["loc"])
        whence = _whence(key, f"{problem.get('input')!r}: {problem['msg']}", given) if key else None
        if whence is None or key[0] in given:
            raise
        raise whence from None


def _whence(key: tuple[str, ...], reason: str, given: dict[str, Any]) -> SettingsError | None:
    """Which variable or settings file (and line) set the bad value `key`, in precedence order."""
    dotted = ".".join(key)
    for depth in range(len(key), 0, -1):
        variable = "LECTERN_" + "__".join(key[:depth]).upper()
        if variable in os.environ:
            return SettingsError(variable, f"{dotted} = {reason}", key=dotted)
    local = Path(LOCAL_FILE)
    for path in (local, _data_dir_hint(InitSettingsSource(Settings, given), local) / SETTINGS_FILE):
        if path.is_file():
            table: Any = read_settings_file(path)
            for part in key:
                table = table.get(part) if isinstance(table, dict) else None
            if table is not None:
                return SettingsError(
                    path.resolve(), f"{dotted} = {reason}", _line_of(path.read_text(), key), dotted
                )
    return None
