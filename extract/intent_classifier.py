"""The built-in learned intent classifier: TF-IDF over word and character n-grams, a linear model.

Why learned: keyword rules written from intent names reach ~80% on real openers (issue 14,
Schema-Guided Dialogue); a linear model over n-grams, trained on a few hundred labelled
conversations, does much better and says how sure it is (``intent_confidence``).

Why these pieces:

* **Features are counted in numpy, not by scikit-learn's vectorizers.** Classification has to
  keep up with the rule extraction (1M conversations, issue 14 item 6), and scikit-learn's
  analyzers walk every document in Python (~65 s for 1M openings with character n-grams).
  Here every opening's text becomes a byte buffer (Arrow's), and every n-gram a 64-bit integer
  code computed for all positions at once: character n-grams are the UTF-8 bytes themselves
  (up to 6 bytes in 48 bits, inside a word or touching its edges, as scikit-learn's
  ``char_wb``), word n-grams a fixed polynomial hash of the word's bytes with the n-gram length
  in the top bits. Training counts them into a sparse matrix for scikit-learn, which does what
  it is good at: the IDF weights (``TfidfTransformer``), the model (``LogisticRegression``)
  and the stratified, grouped cross-validation. Classification never builds that matrix: codes
  are found in the vocabulary through a cache-sized hash table, each run of occurrences (already
  in document order) is multiplied with the IDF-weighted coefficients, and the rows are scaled
  by ``tfidf``'s rule, which needs no per-document count (so no sort). Identical openings are
  classified once, chunks of 50,000 at a time on two threads (numpy and scipy release the GIL).
  Training and classification share one featurizer and one formula (a test holds them equal),
  so they cannot drift apart. 1M openings take ~3 s (``benchmarks/intent_sgd.md``).
* **The rules can be features** (``rule_features`` > 0): one column per intent rule, set where
  the rule's regex matches. Hand-written rules carry knowledge a few hundred labels lack (on
  SGD they add about a point of accuracy); the model then depends on the rules, so they are in
  the settings hash and an edited rule asks for a retrain.
* **Text is prepared the same way at both ends**: PII redacted (``extract.redact``: an email
  becomes ``[email]``, so neither the model's vocabulary nor its file holds one), lower-cased,
  whitespace collapsed, cut to ``max_chars``. The prepared form of a few probe openings is
  part of the settings hash, so a release that prepares text differently (a new redaction
  pattern) refuses models trained on the old form instead of feeding them text they never saw.
* **The model file holds arrays only** (``intent-<hash>.npz``: vocabulary codes, IDF weights,
  coefficients, intercepts, class names), read with ``allow_pickle=False``: loading a model
  never runs code, unlike a pickle or joblib file. Beside it, a JSON card
  (``intent-<hash>.json``) records the format version, seed, label set, training rows,
  cross-validated accuracy and the model file's sha256. ``<hash>`` is a hash of the classifier
  settings the model depends on (not ``min_confidence``, which only acts at classification), so a
  config whose settings changed finds no model and is told to retrain, and a card that does not
  match the config or its model file is refused.
* **Deterministic by seed**: the seed orders the cross-validation folds and samples a labelled
  set larger than ``max_training_rows``; the solver (L-BFGS) has no randomness of its own, and
  the model file is written with fixed zip timestamps, so the same labels, settings and seed give
  the same bytes.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import tempfile
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from configs.signals import ClassifierConfig, SignalsConfig, SignalsConfigError
from extract.redact import redact_text

FORMAT = "convocausal-intent-tfidf-linear"
FORMAT_VERSION = 1
CHUNK_TEXTS = 50_000  # openings featurized at a time: bounds the n-gram arrays to ~100 MB
THREADS = min(2, os.cpu_count() or 1)  # chunks classified at once (each holds one chunk's arrays)
MAX_LABEL_CHARS = 200
MAX_LABELS = 1_000

_P = np.uint64(0x100000001B3)  # FNV-1 64-bit prime: the word hash's multiplier
_Q = np.uint64(0x9E3779B97F4A7C15)  # golden-ratio constant: combines word hashes into n-grams
_WORD_POWERS = np.cumprod(np.r_[np.uint64(1), np.full(63, _P, dtype=np.uint64)], dtype=np.uint64)


# --------------------------------------------------------------------------- text → n-gram codes
def prepare_texts(texts: pl.Series, max_chars: int) -> pl.Series:
    """Openings as the featurizer sees them: redacted, lower-case, single spaces, cut, space-padded.

    Run by the streaming engine, which splits the column over the cores (half the time of an
    eager select, which runs each expression on one core).
    """
    t = redact_text(pl.col("t").cast(pl.String).fill_null("")).str.to_lowercase()
    t = t.str.replace_all(r"\s+", " ").str.strip_chars(" ").str.slice(0, max_chars)
    out = pl.LazyFrame({"t": texts}).select((pl.lit(" ") + t + pl.lit(" ")).alias("t")).collect(engine="streaming")
    return out.to_series()


# Openings that exercise every step of ``prepare_texts`` (case, spaces, each kind of PII the
# redaction knows). Their prepared form is part of a model's settings hash: if an upgrade
# changes how text is prepared (a new redaction pattern, say), a model trained on the old form
# is refused and retrained instead of silently fed text it never saw.
PREPARATION_PROBES = (
    "Hello  World\tTabs\nNew line ÄÖÜ é ß",
    "mail jane.doe@example.com or Jane Doe at example dot com",
    "call +44 20 7946 0958 or (415) 555-0132, card 4111 1111 1111 1111",
    "IBAN DE89 3704 0044 0532 0130 00, SSN 123-45-6789, 221B Baker Street",
    "order ORD-500709 ticket 12345678 " + "x" * 600,
)


@functools.lru_cache(maxsize=8)
def preparation_fingerprint(max_chars: int) -> str:
    """Hash of the probes after ``prepare_texts``: changes whenever text preparation does."""
    prepared = prepare_texts(pl.Series(PREPARATION_PROBES, dtype=pl.String), max_chars)
    return hashlib.sha256("\n".join(prepared.to_list()).encode()).hexdigest()[:16]


def _buffers(texts: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """UTF-8 bytes of all texts in one array, and each text's start offset (n + 1 offsets)."""
    arr = texts.to_arrow()
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    arr = arr.cast(pa.large_string())
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64)[arr.offset: arr.offset + len(arr) + 1]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    return data[offsets[0]:offsets[-1]], offsets - offsets[0]


def ngram_codes(data: np.ndarray, offsets: np.ndarray, settings: ClassifierConfig) -> tuple[np.ndarray, np.ndarray]:
    """(document index, n-gram code) for every n-gram occurrence of every text (all runs of ``ngram_runs``)."""
    runs = ngram_runs(data, offsets, settings)
    if not runs:
        return np.zeros(0, np.int32), np.zeros(0, np.uint64)
    return np.concatenate([d for d, _ in runs]), np.concatenate([c for _, c in runs])


def ngram_runs(data: np.ndarray, offsets: np.ndarray, settings: ClassifierConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """(document index, n-gram code) per n-gram length and kind, each run in document order, vectorised.

    Character n-grams: byte windows that do not cross a word boundary inside them (a space may
    only be the first or last byte), code = the bytes themselves (< 2^48). Word n-grams: words
    are runs of ASCII letters/digits or non-ASCII bytes; a word's hash is a polynomial over its
    bytes (mod 2^64), an n-gram's combines its words' hashes; the top two bits hold n (1-3), so
    word and character codes never meet. Windows grow one byte (one word) at a time, so each
    length costs one shift-or (one multiply-add) over the chunk. Each run lists its n-grams by
    position, hence by document: classification sums a run per document without sorting it.
    """
    n_docs = len(offsets) - 1
    doc = np.repeat(np.arange(n_docs, dtype=np.int32), np.diff(offsets))
    docs: list[np.ndarray] = []
    codes: list[np.ndarray] = []
    b64 = data.astype(np.uint64)
    if settings.char_ngrams is not None and len(data):
        left = (offsets[1:][doc] - np.arange(len(data))).astype(np.int32)  # bytes to the end of the byte's text
        is_space = data == 32
        lo, hi = settings.char_ngrams
        code = b64
        inner_space = np.zeros(len(data), dtype=bool)  # a space strictly inside the window
        for n in range(1, hi + 1):
            m = len(data) - n + 1
            if m <= 0:
                break
            if n > 1:
                code = (code[:m] << np.uint64(8)) | b64[n - 1:n - 1 + m]
                inner_space = (inner_space[:m] | is_space[n - 2:n - 2 + m]) if n > 2 else inner_space[:m]
            if n < lo:
                continue
            ok = left[:m] >= n
            if n > 2:
                ok &= ~inner_space
            elif n == 2:
                ok &= ~(is_space[:m] & is_space[1:m + 1])  # never two spaces (an empty text's padding)
            docs.append(doc[:m][ok])
            codes.append(code[ok])
    if settings.word_ngrams is not None and len(data):
        is_word = ((data >= 48) & (data <= 57)) | ((data >= 97) & (data <= 122)) | (data >= 128)
        idx = np.flatnonzero(is_word)
        if len(idx):
            # a word starts where the previous byte is not a word byte (texts are space-padded)
            first = is_word & ~np.r_[False, is_word[:-1]]
            starts = np.flatnonzero(first)
            word_of = np.cumsum(first[idx]) - 1
            word_len = np.bincount(word_of, minlength=len(starts))
            exponent = (starts[word_of] + word_len[word_of] - idx - 1) % 64
            with np.errstate(over="ignore"):
                h = np.add.reduceat(b64[idx] * _WORD_POWERS[exponent], np.r_[0, np.cumsum(word_len)[:-1]])
            wdoc = doc[starts]
            lo, hi = settings.word_ngrams
            g = h
            for n in range(1, hi + 1):
                m = len(h) - n + 1
                if m <= 0:
                    break
                if n > 1:
                    with np.errstate(over="ignore"):
                        g = g[:m] * _Q + h[n - 1:]
                if n < lo:
                    continue
                same = wdoc[n - 1:] == wdoc[:m]
                docs.append(wdoc[:m][same])
                codes.append((g[same] >> np.uint64(2)) | (np.uint64(n) << np.uint64(62)))
    return list(zip(docs, codes))


def _chunks(texts: pl.Series, settings: ClassifierConfig) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(first document index, document index, code) per chunk of prepared texts."""
    for start in range(0, len(texts), CHUNK_TEXTS):
        data, offsets = _buffers(texts.slice(start, CHUNK_TEXTS))
        doc, code = ngram_codes(data, offsets, settings)
        yield start, doc, code


def fit_vocabulary(texts: pl.Series, settings: ClassifierConfig) -> np.ndarray:
    """Sorted codes of the n-grams in at least ``min_df`` texts; the ``max_features`` most frequent."""
    frames = [pl.DataFrame({"doc": doc + start, "code": code}).unique() for start, doc, code in _chunks(texts, settings)]
    if not frames:
        return np.zeros(0, np.uint64)
    df = (pl.concat(frames).group_by("code").agg(pl.len().alias("df"))
          .filter(pl.col("df") >= settings.min_df)
          .sort(["df", "code"], descending=[True, False]).head(settings.max_features))
    return np.sort(df["code"].to_numpy().astype(np.uint64))


def _chunk_counts(texts: pl.Series, vocab: np.ndarray, settings: ClassifierConfig) -> sp.csr_matrix:
    """Counts of one chunk of prepared texts (n-grams outside the vocabulary are dropped)."""
    data, offsets = _buffers(texts)
    doc, code = ngram_codes(data, offsets, settings)
    shape = (len(texts), len(vocab))
    if not len(vocab) or not len(code):
        return sp.csr_matrix(shape, dtype=np.float64)
    at = np.minimum(np.searchsorted(vocab, code), len(vocab) - 1)
    hit = vocab[at] == code
    # coo → csr sums duplicate (row, column) entries: the counts
    return sp.csr_matrix((np.ones(int(hit.sum()), np.float64), (doc[hit], at[hit])), shape=shape)


def count_matrix(texts: pl.Series, vocab: np.ndarray, settings: ClassifierConfig) -> sp.csr_matrix:
    """Texts × vocabulary n-gram counts, built chunk by chunk (``CHUNK_TEXTS`` texts at a time)."""
    parts = [_chunk_counts(texts.slice(s, CHUNK_TEXTS), vocab, settings) for s in range(0, len(texts), CHUNK_TEXTS)]
    if not parts:
        return sp.csr_matrix((0, len(vocab)), dtype=np.float64)
    return parts[0] if len(parts) == 1 else sp.vstack(parts, format="csr")


def rule_regexes(config: SignalsConfig) -> list[str]:
    """The intent rules' regexes when the classifier uses them as features, else none."""
    return [r.regex for r in config.intent.rules] if config.intent.classifier.rule_features > 0 else []


def rule_matrix(prepared: pl.Series, regexes: list[str], weight: float) -> sp.csr_matrix:
    """One column per rule: ``weight`` where the rule's regex matches the prepared text (polars, vectorised)."""
    if not regexes:
        return sp.csr_matrix((len(prepared), 0), dtype=np.float64)
    hits = pl.DataFrame({"t": prepared}).lazy().select(
        [pl.col("t").str.contains(rx).alias(f"r{i}") for i, rx in enumerate(regexes)]).collect(engine="streaming")
    return sp.csr_matrix(hits.to_numpy().astype(np.float64) * weight)


def tfidf(counts: sp.csr_matrix, idf: np.ndarray) -> sp.csr_matrix:
    """TF × IDF, each row divided by ``sqrt(sum_f tf_f * idf_f^2)``: the features the model sees.

    Why this scaling and not scikit-learn's (sublinear TF, unit L2 rows): it needs no count per
    (text, n-gram) pair, only per-occurrence sums, so classification adds up each n-gram
    occurrence's weight as it comes (``IntentModel._predict_chunk``) without sorting or grouping
    the occurrences — most of the time of a sparse matrix build. For a text without repeated
    n-grams it is exactly the unit-length TF-IDF row; on SGD it scores within half a point of
    scikit-learn's sublinear TF-IDF (measured on folds 1-4 while switching).
    """
    x = counts.tocsr(copy=True)
    x.data = x.data * idf[x.indices]
    norms = np.sqrt(np.asarray(counts @ (idf * idf))).ravel()
    norms[norms == 0] = 1.0
    x.data /= np.repeat(norms, np.diff(x.indptr))
    return x


# --------------------------------------------------------------------------- the model
@dataclass
class IntentModel:
    """A trained model: vocabulary, IDF weights and a multinomial linear model over them."""

    settings: ClassifierConfig
    vocab: np.ndarray  # uint64, sorted
    idf: np.ndarray  # float64, one per vocabulary entry
    coef: np.ndarray  # float64, classes × (vocabulary + rules)
    intercept: np.ndarray  # float64, one per class
    classes: list[str]
    rules: list[str] = field(default_factory=list)  # rule regexes used as features (from the config)
    card: dict = field(default_factory=dict)
    _weighted: tuple | None = field(default=None, repr=False, compare=False)  # cache of _weighted_coef
    _table: tuple | None = field(default=None, repr=False, compare=False)  # cache of _lookup

    def features(self, prepared: pl.Series) -> sp.csr_matrix:
        x = tfidf(count_matrix(prepared, self.vocab, self.settings), self.idf)
        if self.rules:
            x = sp.hstack([x, rule_matrix(prepared, self.rules, self.settings.rule_features)], format="csr")
        return x

    def predict_prepared(self, prepared: pl.Series) -> tuple[np.ndarray, np.ndarray]:
        """(class index, probability of that class) per prepared text, ``CHUNK_TEXTS`` at a time.

        One chunk's features are built, scored and dropped before the next: memory stays at one
        chunk's n-grams (~100 MB) however many texts there are.
        """
        starts = range(0, len(prepared), CHUNK_TEXTS)
        workers = min(THREADS, len(starts))
        if workers <= 1:
            parts = [self._predict_chunk(prepared.slice(s, CHUNK_TEXTS)) for s in starts]
        else:  # numpy and scipy's sparse kernels release the GIL: chunks run side by side
            with ThreadPoolExecutor(workers) as pool:
                parts = list(pool.map(lambda s: self._predict_chunk(prepared.slice(s, CHUNK_TEXTS)), starts))
        best = [np.zeros(0, np.int64)] + [b for b, _ in parts]
        conf = [np.zeros(0, np.float64)] + [c for _, c in parts]
        return np.concatenate(best), np.concatenate(conf)

    def scores(self, prepared: pl.Series) -> np.ndarray:
        """Linear scores (texts × classes), ``features(prepared) @ coef.T + intercept`` computed run by run.

        Each run of n-gram occurrences (``ngram_runs``) is in document order, so its rows are
        known without sorting: one sparse matrix-product with the IDF-weighted coefficients
        and one weighted count (the row scale of ``tfidf``) per run. Repeated n-grams simply
        add up, which is what ``tfidf`` defines.
        """
        n, n_vocab = len(prepared), len(self.vocab)
        weighted, idf2 = self._weighted_coef()
        out = np.zeros((n, weighted.shape[1]))
        norm2 = np.zeros(n)
        if n_vocab:
            data, offsets = _buffers(prepared)
            lookup = self._lookup()
            for doc, code in ngram_runs(data, offsets, self.settings):
                at = lookup(code)
                hit = at >= 0
                doc, at = doc[hit], at[hit]
                indptr = np.zeros(n + 1, np.int64)
                np.cumsum(np.bincount(doc, minlength=n), out=indptr[1:])
                run = sp.csr_matrix((np.ones(len(at)), at, indptr), shape=(n, n_vocab))
                out += run @ weighted
                norm2 += np.bincount(doc, weights=idf2[at], minlength=n)
        norm = np.sqrt(norm2)
        norm[norm == 0] = 1.0
        out /= norm[:, None]
        if self.rules:
            out += rule_matrix(prepared, self.rules, self.settings.rule_features) @ self.coef[:, n_vocab:].T
        return out + self.intercept

    def _lookup(self):
        """code → vocabulary index (-1: not in it), by a hash table with a sorted-array fallback.

        Why not ``np.searchsorted`` alone: it was a third of classification time (17 probes per
        code). The table has 8 slots per vocabulary entry (2 MB for 30k n-grams: it stays in
        cache), slot = the code times an odd constant, top bits. A slot that two entries share
        is marked and its codes are looked up in the sorted vocabulary instead; every other code
        costs one multiply and two reads.
        """
        if self._table is None:
            n = len(self.vocab)
            bits = max(8, int(np.ceil(np.log2(max(n, 1) * 8))))
            shift = np.uint64(64 - bits)
            with np.errstate(over="ignore"):
                slots = ((self.vocab * _Q) >> shift).astype(np.intp)
            keys = np.zeros(1 << bits, np.uint64)
            vals = np.full(1 << bits, -1, np.int32)
            shared = np.bincount(slots, minlength=1 << bits) > 1
            alone = ~shared[slots]
            keys[slots[alone]] = self.vocab[alone]
            vals[slots[alone]] = np.flatnonzero(alone).astype(np.int32)
            vals[shared] = -2
            self._table = (keys, vals, shift)
        keys, vals, shift = self._table
        vocab = self.vocab

        def lookup(code: np.ndarray) -> np.ndarray:
            with np.errstate(over="ignore"):
                slot = ((code * _Q) >> shift).astype(np.intp)
            v = vals[slot]
            at = np.where((v >= 0) & (keys[slot] == code), v, np.int32(-1))
            crowded = np.flatnonzero(v == -2)
            if len(crowded):
                c = code[crowded]
                j = np.minimum(np.searchsorted(vocab, c), len(vocab) - 1)
                at[crowded] = np.where(vocab[j] == c, j, -1)
            return at

        return lookup

    def _weighted_coef(self) -> tuple[np.ndarray, np.ndarray]:
        """(IDF × coefficients as vocabulary × classes, IDF squared), computed once per model."""
        if self._weighted is None:
            n_vocab = len(self.vocab)
            self._weighted = (np.ascontiguousarray((self.coef[:, :n_vocab] * self.idf).T), self.idf * self.idf)
        return self._weighted

    def _predict_chunk(self, prepared: pl.Series) -> tuple[np.ndarray, np.ndarray]:
        scores = self.scores(prepared)
        if scores.shape[1] == 1:  # two classes: scikit-learn keeps one column (the second class)
            scores = np.hstack([np.zeros_like(scores), scores])
        scores -= scores.max(axis=1, keepdims=True)
        prob = np.exp(scores)
        prob /= prob.sum(axis=1, keepdims=True)
        best = prob.argmax(axis=1)
        return best, prob[np.arange(len(best)), best]

    def predict(self, texts: pl.Series) -> pl.DataFrame:
        """``intent`` and ``intent_confidence`` per text (null for a null text).

        Identical openings are prepared and classified once ("where is my order?" comes back
        thousands of times a day); the result is joined back in input order.
        """
        frame = pl.DataFrame({"t": texts.cast(pl.String)})
        distinct = frame.unique(subset="t", maintain_order=True).drop_nulls()
        best, conf = self.predict_prepared(prepare_texts(distinct["t"], self.settings.max_chars))
        names = pl.Series("intent", self.classes, dtype=pl.String)
        labelled = distinct.with_columns(names.gather(best).alias("intent"),
                                         pl.Series("intent_confidence", conf, dtype=pl.Float64))
        return frame.join(labelled, on="t", how="left", maintain_order="left").select("intent", "intent_confidence")


def settings_hash(config: SignalsConfig) -> str:
    """The hash naming a model file: every setting the model depends on, the format version, the
    rules when they are features, and how this version of the code prepares text."""
    settings = config.intent.classifier.model_dump(mode="json", exclude={"min_confidence"})
    key = {"format": FORMAT, "format_version": FORMAT_VERSION,
           "opening_user_turns": config.intent.opening_user_turns, "classifier": settings,
           "rules": rule_regexes(config),
           "text_preparation": preparation_fingerprint(config.intent.classifier.max_chars)}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def model_paths(config: SignalsConfig, model_dir: str | Path) -> tuple[Path, Path]:
    """(model file, card file) for this config in ``model_dir``."""
    stem = f"intent-{settings_hash(config)}"
    return Path(model_dir) / f"{stem}.npz", Path(model_dir) / f"{stem}.json"


def _npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """An ``.npz`` archive (readable by ``np.load``) with fixed timestamps, so equal arrays give equal bytes."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.save(buf, arr, allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue())
    return out.getvalue()


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_model(model: IntentModel, config: SignalsConfig, model_dir: str | Path) -> tuple[Path, Path]:
    """Write the model and its card (model first; the card names the model's sha256)."""
    model_path, card_path = model_paths(config, model_dir)
    blob = _npz_bytes({
        "vocab": model.vocab, "idf": model.idf, "coef": model.coef, "intercept": model.intercept,
        "classes": np.array(model.classes, dtype=str),
    })
    card = {**model.card, "model_file": model_path.name, "model_sha256": hashlib.sha256(blob).hexdigest()}
    _write_atomic(model_path, blob)
    _write_atomic(card_path, (json.dumps(card, indent=2, sort_keys=True) + "\n").encode())
    model.card = card
    return model_path, card_path


def load_model(config: SignalsConfig, model_dir: str | Path) -> IntentModel:
    """The model trained for this config's settings, after checking its card against the config.

    Refused (``SignalsConfigError``) when there is none, when the card's format, settings hash,
    settings or opening turns differ from the config, when the model file's sha256 is not the
    card's, or when its classes are not the card's label set.
    """
    model_path, card_path = model_paths(config, model_dir)
    if not card_path.is_file() or not model_path.is_file():
        others = sorted(p.name for p in Path(model_dir).glob("intent-*.json")) if Path(model_dir).is_dir() else []
        hint = (f" (models there were trained under other settings or another version's text preparation: "
                f"{', '.join(others[:5])})" if others else "")
        raise SignalsConfigError(
            f"no trained intent model for this signals config in {model_dir} (expected {model_path.name}){hint}: "
            "run `convocausal signals train --labels FILE --signals CONFIG --store STORE --raw RAW`")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SignalsConfigError(f"{card_path}: unreadable model card: {exc}") from exc
    expected = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "settings_hash": settings_hash(config),
        "settings": config.intent.classifier.model_dump(mode="json", exclude={"min_confidence"}),
        "opening_user_turns": config.intent.opening_user_turns,
    }
    for key, want in expected.items():
        if card.get(key) != want:
            raise SignalsConfigError(f"{card_path}: the model card's {key} is {card.get(key)!r}, the config needs "
                                   f"{want!r}: retrain with `convocausal signals train`")
    blob = model_path.read_bytes()
    if hashlib.sha256(blob).hexdigest() != card.get("model_sha256"):
        raise SignalsConfigError(f"{model_path}: the file does not match its card's sha256 (changed after training, "
                               "or a training run was interrupted): retrain")
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        arrays = {k: z[k] for k in ("vocab", "idf", "coef", "intercept", "classes")}
    classes = [str(c) for c in arrays["classes"]]
    if classes != card.get("labels"):
        raise SignalsConfigError(f"{model_path}: classes {classes[:5]}… are not the card's label set")
    rules = rule_regexes(config)
    n_feat = len(arrays["vocab"])
    if arrays["idf"].shape != (n_feat,) or arrays["coef"].shape[1:] != (n_feat + len(rules),):
        raise SignalsConfigError(f"{model_path}: arrays of inconsistent shapes")
    return IntentModel(config.intent.classifier, arrays["vocab"].astype(np.uint64), arrays["idf"].astype(np.float64),
                       arrays["coef"].astype(np.float64), arrays["intercept"].astype(np.float64), classes, rules, card)


# --------------------------------------------------------------------------- training
def _fit(prepared: pl.Series, y: np.ndarray, settings: ClassifierConfig, seed: int,
         rules: list[str] = ()) -> IntentModel:
    from sklearn.feature_extraction.text import TfidfTransformer
    from sklearn.linear_model import LogisticRegression

    vocab = fit_vocabulary(prepared, settings)
    counts = count_matrix(prepared, vocab, settings)
    idf = TfidfTransformer(sublinear_tf=True).fit(counts).idf_
    model = IntentModel(settings, vocab, idf, np.zeros(0), np.zeros(0), [], list(rules))
    x = model.features(prepared)
    clf = LogisticRegression(C=settings.c, max_iter=settings.max_iter, random_state=seed,
                             class_weight=None if settings.class_weight == "none" else "balanced")
    # One BLAS thread: the solver's dense steps are small (rows × classes), and several BLAS
    # threads on a shared machine made a fit 6x slower here; one thread also fixes the order of
    # floating-point sums, so a fit is bit-for-bit repeatable.
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        warnings.simplefilter("ignore")  # ConvergenceWarning at max_iter: the card's CV says how good it is
        clf.fit(x, y)
    model.coef = clf.coef_.astype(np.float64)
    model.intercept = clf.intercept_.astype(np.float64)
    model.classes = [str(c) for c in clf.classes_]
    return model


def cross_validate(prepared: pl.Series, y: np.ndarray, groups: np.ndarray, settings: ClassifierConfig,
                   seed: int, folds: int | None = None, rules: list[str] = ()) -> dict:
    """Out-of-fold predictions with folds stratified by label and grouped by conversation.

    Vocabulary and IDF are refit inside each fold (from its training part only), so no word of
    a held-out text reaches its own model. Returns ``accuracy``, ``fold_accuracy``, ``folds``,
    ``stratified`` and ``predicted`` (one label per row, in input order).
    """
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    k = folds or settings.cv_folds
    _, counts = np.unique(y, return_counts=True)
    k = max(2, min(k, len(np.unique(groups))))
    stratified = counts.min() >= k
    splitter = (StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed) if stratified
                else GroupKFold(n_splits=k))
    predicted = np.empty(len(y), dtype=object)
    fold_acc = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # classes smaller than k cannot be stratified (said in `stratified`)
        splits = list(splitter.split(np.zeros(len(y)), y, groups))
    for train, test in splits:
        model = _fit(prepared.gather(train), y[train], settings, seed, rules)
        best, _ = model.predict_prepared(prepared.gather(test))
        predicted[test] = np.array(model.classes, dtype=object)[best]
        fold_acc.append(float(np.mean(predicted[test] == y[test])))
    return {"folds": k, "stratified": bool(stratified), "accuracy": float(np.mean(predicted == y)),
            "fold_accuracy": [round(a, 6) for a in fold_acc], "predicted": predicted.tolist()}


def check_labels(labels: pl.DataFrame, source: str = "labels") -> pl.DataFrame:
    """``conversation_id, intent`` as strings, nulls dropped, one label per conversation; refused if unusable."""
    missing = [c for c in ("conversation_id", "intent") if c not in labels.columns]
    if missing:
        raise SignalsConfigError(f"{source}: lacks column(s) {missing}; a labels table has conversation_id, intent")
    out = labels.select(pl.col("conversation_id").cast(pl.String), pl.col("intent").cast(pl.String)).drop_nulls()
    out = out.with_columns(pl.col("intent").str.strip_chars()).filter(pl.col("intent") != "")
    too_long = out.filter(pl.col("intent").str.len_chars() > MAX_LABEL_CHARS)
    if too_long.height:
        raise SignalsConfigError(f"{source}: intent labels longer than {MAX_LABEL_CHARS} characters, "
                                 f"e.g. {too_long['intent'][0][:60]!r}…")
    if out.select(pl.col("intent").str.contains(r"[\x00-\x1f\x7f]").any()).item():
        raise SignalsConfigError(f"{source}: intent labels hold control characters")
    conflicting = out.unique().group_by("conversation_id").agg(pl.len()).filter(pl.col("len") > 1)
    if conflicting.height:
        raise SignalsConfigError(f"{source}: {conflicting.height} conversation(s) have more than one intent label, "
                                 f"e.g. {conflicting['conversation_id'][0]}")
    out = out.unique(subset="conversation_id", keep="first").sort("conversation_id")
    n_labels = out["intent"].n_unique()
    if out.height < 2 or n_labels < 2:
        raise SignalsConfigError(f"{source}: needs at least two labelled conversations with two different intents "
                                 f"(has {out.height} rows, {n_labels} intent(s))")
    if n_labels > MAX_LABELS:
        raise SignalsConfigError(f"{source}: {n_labels} distinct intents (max {MAX_LABELS})")
    return out


def labels_from_rules(openings: pl.DataFrame, config: SignalsConfig) -> pl.DataFrame:
    """A seed set where no labels exist: the openings a rule matched, labelled by that rule.

    The default intent is left out (a rule that did not fire says nothing), so the classifier
    learns the rules' intents from their clear cases and generalises to openers they miss.
    """
    from extract.intent import RuleIntentExtractor

    out = RuleIntentExtractor(config).classify(openings.select("conversation_id", "opening_text"))
    return out.filter(pl.col("intent_confidence") >= 1.0).select("conversation_id", "intent")


@dataclass
class TrainResult:
    model: IntentModel
    card: dict
    model_path: Path
    card_path: Path
    cv_predictions: pl.DataFrame  # conversation_id, intent (label), predicted (out of fold)


def train_intent_model(config: SignalsConfig, openings: pl.DataFrame, labels: pl.DataFrame,
                       model_dir: str | Path, seed: int = 0, labels_source: str = "labels") -> TrainResult:
    """Cross-validate, fit on every labelled opening, write model + card to ``model_dir``.

    ``openings``: conversation_id, opening_text (as ``extract.signals.opening_texts`` gives them,
    so training sees the text classification will see). ``labels``: conversation_id, intent.
    """
    settings = config.intent.classifier
    labels = check_labels(labels, labels_source)
    rows = (labels.join(openings.select(pl.col("conversation_id").cast(pl.String), "opening_text"),
                        on="conversation_id", how="inner")
            .sort("conversation_id"))
    unmatched = labels.height - rows.height
    if rows.height < 2 or rows["intent"].n_unique() < 2:
        raise SignalsConfigError(f"{labels_source}: only {rows.height} labelled conversation(s) found in the transcripts "
                                 f"({unmatched} label(s) name no conversation); need two intents at least")
    sampled_from = rows.height
    if rows.height > settings.max_training_rows:
        rows = rows.sample(n=settings.max_training_rows, seed=seed, shuffle=False).sort("conversation_id")
    prepared = prepare_texts(rows["opening_text"], settings.max_chars)
    y = rows["intent"].to_numpy().astype(object)
    rules = rule_regexes(config)
    cv = cross_validate(prepared, y, rows["conversation_id"].to_numpy(), settings, seed, rules=rules)
    model = _fit(prepared, y, settings, seed, rules)
    per_label = rows.group_by("intent").agg(pl.len()).sort("intent")
    data_hash = hashlib.sha256(rows.select("conversation_id", "intent").write_csv().encode()).hexdigest()
    import sklearn

    model.card = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "settings_hash": settings_hash(config),
        "settings": settings.model_dump(mode="json", exclude={"min_confidence"}),
        "opening_user_turns": config.intent.opening_user_turns,
        "seed": seed, "labels": model.classes, "labels_source": labels_source, "rule_features": len(rules),
        "text_preparation": preparation_fingerprint(settings.max_chars),
        "training_rows": rows.height, "labelled_rows_matched": sampled_from, "labels_without_conversation": unmatched,
        "rows_per_label": dict(zip(per_label["intent"].to_list(), per_label["len"].to_list())),
        "training_data_sha256": data_hash, "n_features": len(model.vocab),
        "cv": {k: cv[k] for k in ("folds", "stratified", "accuracy", "fold_accuracy")}
        | {"grouped_by": "conversation_id", "text": f"first {config.intent.opening_user_turns} customer message(s)"},
        "trained_with": {"scikit-learn": sklearn.__version__, "numpy": np.__version__},
    }
    model_path, card_path = save_model(model, config, model_dir)
    preds = rows.select("conversation_id", "intent").with_columns(pl.Series("predicted", cv["predicted"], pl.String))
    return TrainResult(model, model.card, model_path, card_path, preds)


# --------------------------------------------------------------------------- the extractor
class ClassifierIntentExtractor:
    """``IntentExtractor`` backed by a trained ``IntentModel``.

    ``intent_confidence`` is the model's probability of the intent it gives; no customer
    message → the default intent with 0.0; probability below ``min_confidence`` → the default
    intent, keeping that probability as its confidence.
    """

    def __init__(self, config: SignalsConfig, model: IntentModel) -> None:
        self.config = config
        self.model = model

    def classify(self, openings: pl.DataFrame) -> pl.DataFrame:
        text = openings["opening_text"]
        pred = self.model.predict(text)
        default = pl.lit(self.config.intent.default, pl.String)
        low = self.config.intent.classifier.min_confidence
        no_text = pl.col("opening_text").is_null()
        return pl.concat([openings.select("conversation_id", "opening_text"), pred], how="horizontal").select(
            pl.col("conversation_id"),
            pl.when(no_text | (pl.col("intent_confidence") < low)).then(default).otherwise(pl.col("intent"))
            .alias("intent"),
            pl.when(no_text).then(0.0).otherwise(pl.col("intent_confidence")).alias("intent_confidence"),
        )


def classifier_extractor(config: SignalsConfig, model_dir: Path | None = None,
                         options: Mapping[str, object] | None = None) -> ClassifierIntentExtractor:
    """Entry point ``classifier``: the model trained for this config in the store's model folder."""
    if options:
        raise SignalsConfigError(f"intent extractor `classifier` takes its settings under intent.classifier, "
                                 f"not extractor_options ({sorted(options)})")
    if model_dir is None:
        raise SignalsConfigError("intent extractor `classifier` needs the store's model folder (<store>.parts/models)")
    return ClassifierIntentExtractor(config, load_model(config, model_dir))


__all__ = [
    "ClassifierIntentExtractor", "IntentModel", "TrainResult", "classifier_extractor",
    "count_matrix", "cross_validate", "fit_vocabulary", "labels_from_rules", "load_model", "model_paths",
    "ngram_codes", "prepare_texts", "save_model", "settings_hash", "tfidf", "train_intent_model",
]
