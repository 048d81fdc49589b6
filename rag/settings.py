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
    mode: RetrievalMode = "hybrid"
    k: int = Field(5, ge=1, le=K_MAX)
    fetch_k: int = Field(50, ge=1, le=1000)
    mmr: bool = False
    mmr_lambda: float = Field(0.5, ge=0.0, le=1.0)
    # Tuned on CMU S08 (bench/retrieval_quality.py); S09 is the held-out check.
    dense_weight: float = Field(0.4, ge=0.0)
    bm25_weight: float = Field(0.6, ge=0.0)
    min_score: float = 0.0
    # a local cross-encoder folder (rag.rerank): reorders the best rerank_candidates hits, keeps k
    reranker: str | None = None
    rerank_candidates: int = Field(20, ge=1, le=CANDIDATES_MAX)
    # correct a query word the collection has never seen to its commonest word one edit away
    # ("Netwon" -> "Newton") for BM25 and the evidence gate (rag.retrieval.Searcher.spelled)
    spelling: bool = True


AnswerContext = Literal["sentences", "chunks"]
AnswerOrder = Literal["rank", "best"]  # rag.evidence.ORDERS
EvidenceGate = Literal["meaning", "words", "coverage"]  # rag.evidence.MEANING, WORDS, COVERAGE_ONLY


class AnswerSettings(BaseModel):
    """How questions are put to the model (ask, chat, the web UI and `lectern eval answers`).
    docs/ANSWERS.md measures each choice; the defaults are the best on CMU S08."""

    prompt: QAPrompt = "concise"
    structured: bool = False  # JSON answer + citation numbers, validated (rag.qa.StructuredAnswer)
    # structured answers are decoded under a JSON schema (rag.llm.structured, on the local and llamacpp
    # backends): this file's (an object with a string "answer"), else {"answer", "citations"}
    json_schema: Path | None = None
    # what the model is shown of the k chunks: their best sentences with neighbours, or all of them
    context: AnswerContext = "sentences"
    # with context = "sentences": how many best sentences, and how many neighbours either side of each
    # (the same defaults as rag.evidence.SENTENCES / NEIGHBOURS, which this module does not import)
    sentences: int = Field(6, ge=1, le=50)
    neighbours: int = Field(1, ge=0, le=10)
    # with context = "sentences": the excerpt whose sentence matches the question best first, or the
    # excerpts in their chunks' retrieval rank (rag.evidence.ORDER; docs/ANSWERS.md, eighth run)
    order: AnswerOrder = "best"
    # abstain without asking the model when the question's subject is not in the sources
    # (rag.evidence, calibrated on S08); off: only the model decides
    evidence: bool = True
    # what the gate reads (rag.evidence): "meaning", the best chunk's and sentence's cosine to the
    # question and its names in the sources (MEANING); "words", its rarer words in the best chunk and
    # that chunk's cosine (WORDS); "coverage", the rarer words alone (COVERAGE_ONLY, the gate every
    # collection got before docs/ANSWERS.md's tenth run). With an embedder other than the accurate
    # profile's, the gate is always "coverage": the fits are on MiniLM's cosine scale.
    gate: EvidenceGate = "meaning"
    # the gate's threshold (None: the calibration's): lower answers more reworded questions and lets
    # more answers through when the documents lack them, which the subject check then has to catch
    evidence_threshold: float | None = Field(None, ge=0.0, le=1.0)
    # with context = "sentences": the weight of a sentence's cosine to the question beside its share
    # of the question's words when choosing what the model is shown (rag.evidence.sentence_scores).
    # 0: words alone, the default: 1.0 shows reworded questions their answer far more often but the
    # 0.5B model answered fewer held-out questions with it (docs/ANSWERS.md, eleventh run). Like the
    # meaning gate, only with the accurate profile's embedder, on whose cosine scale 1.0 was tuned
    meaning: float = Field(0.0, ge=0.0, le=100.0)
    # with context = "sentences": this many more sentences, the closest in meaning to the question
    # that the words did not choose, shown after those (rag.evidence.select_sentences' `extra`); the
    # word-matched ones keep their places. Accurate profile only, as `meaning`. 0: none (docs/ANSWERS.md)
    by_meaning: int = Field(0, ge=0, le=20)
    # a "when"/"how many" answer whose date or number is not the one stated by the sentence that
    # answers the question best is asked once more with that sentence alone (rag.verify.wrong_fact)
    facts: bool = False
    # check the answer (rag.verify): one that restates the question or says what no source says is
    # asked again for a source's exact words, or the chain abstains
    verify: bool = True
    # with verify: an answer whose new words no one passage holds together (a sentence and its
    # neighbours) is asked again too, and kept if the second try fails (rag.verify.SCATTERED)
    together: bool = False
    # withdraw an answer taken from passages that are not about the question's subject (its names, and
    # its meaning with the accurate embedder): rag.verify.off_subject. Off: on S08 it withdrew 8 of 60
    # reworded answers whose subject was plainly there, for 2 more hidden-article abstentions on top of
    # the meaning gate (docs/ANSWERS.md, tenth run)
    subject: bool = False
    # a longer question is refused with a clear error (rag.limits): 100k characters took minutes to prefill
    max_question_tokens: int = Field(QUESTION_TOKENS, ge=1)


UnsupportedSentences = Literal["mark", "drop"]  # rag.summarize.UNSUPPORTED


class SummarySettings(BaseModel):
    """How a summary's sentences are checked against the passages summarized (rag.faithful)."""

    # the rarity-weighted share of a sentence's words its best passage must hold (the answers' own
    # threshold, rag.citations.SUPPORTED, which this module does not import)
    support: float = Field(0.6, ge=0.0, le=1.0)
    # a sentence below it is shown flagged (mark) or left out of the summary (drop)
    unsupported: UnsupportedSentences = "mark"


class LLMSettings(BaseModel):
    """Which model answers. `model` is `packaged:NAME` (`packaged:auto` picks one for this machine),
    a model folder, a hub id a user already has cached, or a .gguf file; for the `openai` backend,
    the served model's name."""

    # auto | llamacpp | local | openai | fake (rag.llm.LLM_BACKENDS); auto: llama.cpp for a GGUF model
    # (the packaged ones) unless a LoRA adapter is set or a CUDA GPU wants transformers (rag.llm.choose_backend)
    backend: str = "auto"
    model: str = "packaged:auto"  # the 1.5B with a GPU or 8+ cores, else the 0.5B (rag.models)
    base_url: str | None = None
    api_key: SecretStr | None = None
    temperature: float = Field(0.0, ge=0.0, le=2.0)  # 0: greedy, reproducible answers
    repetition_penalty: float = Field(1.1, ge=1.0, le=2.0)
    max_new_tokens: int = Field(256, ge=1)
    context_window: int | None = Field(None, ge=256)  # None: the model's own
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "auto"  # auto: bf16/fp16 on CUDA; on CPU bf16 where native (avx512_bf16, AMX), else fp32
    threads: int | None = Field(None, ge=1)  # None: every core (local), the physical ones (llamacpp)
    # llamacpp: layers offloaded to the GPU of a CUDA (or Metal, Vulkan) build of llama.cpp; -1 all;
    # None: all of them where llama.cpp has GPU offload and device is not "cpu", else none
    gpu_layers: int | None = Field(None, ge=-1)
    batch_size: int = Field(8, ge=1)
    timeout_s: float = Field(120.0, gt=0.0)
    tokenizer: str | None = None  # openai backend: a local folder or cached hub id to count tokens with
    # local backend: a PEFT LoRA adapter folder on the model (rag.llm.adapters), kept apart from
    # the base weights (switchable) or merged into them at load (a little faster per token)
    adapter: str | None = None
    merge_adapter: bool = False


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LECTERN_", env_nested_delimiter="__", extra="ignore", validate_default=True
    )

    data_dir: Path = Field(default_factory=default_data_dir)
    cache_dir: Path = Field(default_factory=default_cache_dir)
    collection: str = "default"
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
