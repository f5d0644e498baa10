"""fastText's top-1 prediction for hierarchical-softmax classifiers such as lid.176, bit for bit,
with each distinct token's input rows looked up once.

``model.predict(texts, k=1)`` tokenises every document in C++ and, for every token, hashes all of
its character n-grams again (lid.176: 2-4 characters) before it sums their rows; on web text that
is most of language ID's cost, and the same few hundred thousand words recur in every document.
`FastTextTop1` computes once per distinct token the row ids fastText would use (what
``get_subwords`` returns: the word's id and its hashed n-grams, vectorised in numpy over the new
tokens of a batch) and keeps them in a bounded cache, then repeats fastText's own arithmetic in
fastText's order on the model's own matrices, read from its file: the hidden vector
is the float32 running sum of the rows in token order times ``float(1 / n)``; the tree's node
probability is ``1 / (1 + expf(-x))`` with the C library's ``expf``, scores are float32 sums of
``float(log(p + 1e-5))``, and the probability is ``expf(score)``. The answer is the same label and
the same float as fastText's, which `FastTextTop1.load` checks on probe texts before it is used.

What it does not reproduce goes to fastText itself: models with another loss or word n-grams, a
document containing a label token (``__label__``), fastText's end-of-line token ``</s>``, a
newline or a character UTF-8 cannot encode, and
a document whose two best labels are within `TIE_MARGIN` in log-probability (where fastText's
pruned tree search could pick either).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import math
import operator
import re
import struct
from itertools import compress
from typing import NamedTuple

import numpy as np

logger = logging.getLogger(__name__)

# fastText splits on these (Dictionary::readWord); str.split() splits on more, which the texts that
# contain one of _PYTHON_ONLY_SPACE are split by _FASTTEXT_SPLIT instead.
_FASTTEXT_SPLIT = re.compile(r"[ \r\t\v\f\x00\n]+").split
_PYTHON_ONLY_SPACE = re.compile("[\x00\x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]").search
_FASTTEXT_MAGIC, _FASTTEXT_VERSION, _HS_LOSS = 793712314, 12, 1
TIE_MARGIN = 1e-3  # log-probability gap under which fastText decides (its tree search prunes at 1e-5 steps)
MAX_CACHED_TOKENS = 500_000
_CHUNK = 64  # documents whose rows are summed together
_PROBES = [  # load-time check against fastText: several scripts, spacing and punctuation
    "The quick brown fox jumps over the lazy dog.", "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Le renard brun rapide saute par-dessus le chien paresseux\u00a0!", "Быстрая коричневая лиса прыгает через ленивую собаку.",
    "敏捷的棕色狐狸跳过了懒狗。", "すばやい茶色のキツネが怠惰な犬を飛び越える。", "El rápido zorro marrón salta sobre el perro perezoso.",
    "Il veloce volpe marrone salta sopra il cane pigro.", "ο γρήγορος καφέ αλεπού", "hello", "a b\tc\rd\fe\vf\x00g", "",
    "1234 5678 !!! ???", "https://example.com/path?q=1 click here", "Ok  ok   ok\u3000ok\u2003ok",
]


def _expf():
    """The C library's expf (what fastText calls), or None where ctypes cannot find it."""
    name = ctypes.util.find_library("m") or ctypes.util.find_library("c")
    try:
        fn = ctypes.CDLL(name).expf
    except (OSError, AttributeError, TypeError):
        return None
    fn.restype, fn.argtypes = ctypes.c_float, [ctypes.c_float]
    return fn


def fasttext_predict_top1(model, texts: list[str]) -> list[tuple[str, float]]:
    """``model.predict(texts, k=1)`` as ``(label without __label__, probability)`` per text, ``("", 0.0)``
    where fastText predicts nothing: the reference `FastTextTop1` reproduces and falls back to.

    Args:
        model (`fasttext.FastText._FastText`):
            A loaded fastText classifier.
        texts (`list[str]`):
            One line each (fastText raises on a newline).
    """
    labels, probs = model.predict(texts, k=1)
    return [(str(lab[0]).removeprefix("__label__"), float(p[0])) if len(lab) else ("", 0.0) for lab, p in zip(labels, probs)]


class _ModelFile(NamedTuple):
    words: dict[str, int]  # the dictionary's words (type 0) -> id
    nwords: int
    minn: int
    maxn: int
    bucket: int
    prune_keys: np.ndarray | None  # n-gram buckets kept by quantisation (sorted) -> prune_values; None: all kept
    prune_values: np.ndarray | None
    rows: np.ndarray  # input rows, decoded when product-quantised
    output: np.ndarray


def _read_model(path: str) -> _ModelFile | None:
    """What `FastTextTop1` needs from a fastText model file (FastText::saveModel's layout), or None
    when it is not a version-12 model with a dense output matrix."""
    with open(path, "rb") as f:
        b = f.read()
    o = 0

    def read(fmt):
        nonlocal o
        vals = struct.unpack_from("<" + fmt, b, o)
        o += struct.calcsize("<" + fmt)
        return vals

    magic, version = read("ii")
    if magic != _FASTTEXT_MAGIC or version != _FASTTEXT_VERSION:
        return None
    *_, bucket, minn, maxn, _ = read("12i")  # Args::save: dim ws epoch minCount neg wordNgrams loss model bucket minn maxn lrUpdateRate
    o += 8  # t (double)
    size, nwords, _ = read("3i")
    _, prune_size = read("2q")
    words = {}
    for i in range(size):  # dictionary entries: NUL-terminated word, int64 count, int8 type (0 word, 1 label)
        end = b.index(b"\0", o)
        if b[end + 9] == 0:
            words[b[o:end].decode("utf-8", "surrogateescape")] = i
        o = end + 10
    prune_keys = prune_values = None
    if prune_size >= 0:  # -1: not pruned
        pairs = np.frombuffer(b, np.int32, 2 * prune_size, o).reshape(-1, 2)
        order = np.argsort(pairs[:, 0], kind="stable")
        prune_keys, prune_values = pairs[order, 0].astype(np.int64), pairs[order, 1].astype(np.int64)
        o += 8 * prune_size
    (quant,) = read("?")
    if quant:
        qnorm, m, n, codesize = *read("?"), *read("2q"), *read("i")
        codes = np.frombuffer(b, np.uint8, codesize, o).reshape(m, -1)
        o += codesize
        dim, nsubq, dsub, lastdsub = read("4i")
        centroids = np.frombuffer(b, np.float32, dim * 256, o)
        o += 4 * dim * 256
        rows = np.empty((m, n), np.float32)
        for s in range(nsubq):  # ProductQuantizer::get_centroids / addcode
            d = lastdsub if s == nsubq - 1 else dsub
            table = centroids[s * 256 * dsub : s * 256 * dsub + 256 * d].reshape(256, d)
            rows[:, s * dsub : s * dsub + d] = table[codes[:, s]]
        if qnorm:  # QuantMatrix::addRowToVector scales the code by the row's quantised norm
            norm_codes = np.frombuffer(b, np.uint8, m, o)
            o += m + 4 * 4
            norms = np.frombuffer(b, np.float32, 256, o)[norm_codes]
            o += 4 * 256
            rows = (norms[:, None] * rows).astype(np.float32)
    else:
        m, n = read("2q")
        rows = np.frombuffer(b, np.float32, m * n, o).reshape(m, n)
        o += 4 * m * n
    (qout,) = read("?")
    if qout:
        return None
    om, on = read("2q")
    out = np.frombuffer(b, np.float32, om * on, o).reshape(om, on).copy()
    if o + 4 * om * on != len(b) or on != rows.shape[1]:
        return None
    return _ModelFile(words, nwords, minn, maxn, bucket, prune_keys, prune_values, rows, out)


class FastTextTop1:
    """Top-1 ``(label, probability)`` of a loaded fastText hierarchical-softmax model, identical to
    ``model.predict(text, k=1)``; build it with `FastTextTop1.load`, which returns None for a model
    it does not reproduce.

    Args:
        model (`fasttext.FastText._FastText`):
            The loaded model: its labels and counts build the tree, its ``predict`` answers what this class does
            not reproduce.
        file (`_ModelFile`):
            The same model's matrices and dictionary, read from its file (`_read_model`).
        expf (`ctypes` function):
            The C library's ``expf`` (`_expf`), the one fastText calls.
    """

    def __init__(self, model, file: _ModelFile, expf):
        rows, output = file.rows, file.output
        self.rows_pad = np.concatenate([rows, np.zeros((1, rows.shape[1]), np.float32)])  # last: padding
        self.model, self.file, self.expf = model, file._replace(rows=self.rows_pad[:-1]), expf  # one copy of the rows
        self.output_columns = [np.ascontiguousarray(output[:, j]) for j in range(output.shape[1])]
        labels, counts = model.get_labels(include_freq=True)
        self.labels = [str(lab).removeprefix("__label__") for lab in labels]
        self.osz = osz = len(counts)
        # HierarchicalSoftmaxLoss::buildTree: Huffman tree over the label counts, internal nodes osz..2*osz-2
        left, right, count = [-1] * (2 * osz - 1), [-1] * (2 * osz - 1), [1e15] * (2 * osz - 1)
        count[:osz] = [int(c) for c in counts]
        leaf, node = osz - 1, osz
        for i in range(osz, 2 * osz - 1):
            pair = []
            for _ in range(2):
                if leaf >= 0 and count[leaf] < count[node]:
                    pair.append(leaf)
                    leaf -= 1
                else:
                    pair.append(node)
                    node += 1
            left[i], right[i] = pair
            count[i] = count[pair[0]] + count[pair[1]]
        # levels of (parent, left child, right child) from the root down, and each leaf's path
        self.levels, self.paths, frontier, path = [], {}, [2 * osz - 2], {2 * osz - 2: ()}
        while frontier:
            parents = [p for p in frontier if p >= osz]
            for p in frontier:
                if p < osz:
                    self.paths[p] = path[p]
            if not parents:
                break
            for p in parents:
                path[left[p]], path[right[p]] = path[p] + ((p, False),), path[p] + ((p, True),)
            self.levels.append(tuple(np.array(x) for x in (parents, [left[p] for p in parents], [right[p] for p in parents])))
            frontier = [c for p in parents for c in (left[p], right[p])]
        depth = max(len(v) for v in self.paths.values())
        self.path_nodes = np.zeros((osz, depth), np.intp)  # leaf -> its path's internal nodes (minus osz), root first
        self.path_right = np.zeros((osz, depth), bool)  # ... and whether the path goes right there
        self.path_length = np.zeros(osz, np.intp)
        for leaf_id, steps in self.paths.items():
            self.path_length[leaf_id] = len(steps)
            for k, (node_id, right_turn) in enumerate(steps):
                self.path_nodes[leaf_id, k], self.path_right[leaf_id, k] = node_id - osz, right_turn
        self.threshold_score = np.float32(math.log(0.0 + 1e-5))  # std_log(threshold=0): dfs prunes below it
        self.pruned = None  # n-gram bucket -> its row among the kept ones, -1 when quantisation dropped it
        if file.prune_keys is not None:
            self.pruned = np.full(file.bucket, -1, np.int32)
            self.pruned[file.prune_keys] = file.prune_values
        self.cache: dict[str, int] = {}  # token -> 1 + its entry of _starts/_lengths into _flat (its row ids)
        self._starts, self._lengths = np.zeros(1024, np.intp), np.zeros(1024, np.intp)
        self._flat, self._size = np.zeros(4096, np.intp), 0
        self.fallbacks = 0

    @classmethod
    def load(cls, model, path: str) -> FastTextTop1 | None:
        """A `FastTextTop1` for ``model`` (loaded from ``path``), or None when the model is not a
        hierarchical-softmax classifier without word n-grams, the file cannot be read, the C
        library's ``expf`` is out of reach, or any probe text predicts differently from fastText."""
        args = model.f.getArgs()
        if int(args.loss.value if hasattr(args.loss, "value") else args.loss) != _HS_LOSS or args.wordNgrams != 1:
            return None
        expf = _expf()
        try:
            file = _read_model(path) if expf is not None else None
        except (OSError, ValueError, struct.error):  # unreadable or not the layout fastText 0.9 writes
            file = None
        if file is None:
            return None
        fast = cls(model, file, expf)
        mine, theirs = fast.predict(_PROBES), [fast._fasttext(t) for t in _PROBES]
        fast.fallbacks = 0
        if mine != theirs:
            logger.warning("fastText top-1 fast path disagrees with fastText on a probe text; using fastText's predict.")
            return None
        return fast

    def _fasttext(self, text: str) -> tuple[str, float]:
        return fasttext_predict_top1(self.model, [text])[0]

    def clear_cache(self) -> None:
        """Forget every cached token (the next texts start from an empty cache)."""
        self.cache.clear()
        self._size = 0

    def _subword_ids(self, tokens: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Dictionary::getSubwords of each token, vectorised over the tokens: the row ids (flat) and
        how many each token has. In fastText's order: the word's id when the dictionary holds it,
        then the kept hashed n-grams of ``"<" + token + ">"`` of ``minn``..``maxn`` characters (UTF-8
        characters, by start then length); fastText's end-of-line token ``</s>`` has only its id."""
        f = self.file
        encoded = [("<" + t + ">").encode() for t in tokens]
        buf = np.frombuffer(b"".join(encoded), np.uint8)
        starts_char = np.flatnonzero((buf & 0xC0) != 0x80)  # byte offset of each character
        chars = np.add.reduceat((buf & 0xC0) != 0x80, np.cumsum([0] + [len(e) for e in encoded[:-1]])).astype(np.intp)
        token_of = np.repeat(np.arange(len(tokens)), chars)
        within = np.arange(len(starts_char)) - np.repeat(np.cumsum(chars) - chars, chars)
        bounds = np.append(starts_char, len(buf))  # words are contiguous: the next word's start ends this one
        eos = np.array([t == "</s>" for t in tokens])
        # Dictionary::hash (32-bit FNV-1a over the bytes as signed chars: a byte >= 0x80 enters as
        # 0xFFFFFFxx) of every n-gram, extending the n-gram at each character by one character a step
        signed = buf.astype(np.int8).astype(np.int32).astype(np.uint32)
        char_bytes = np.diff(bounds)
        room = chars[token_of] - within  # characters from this one to the end of its token
        first = max(f.minn, 1)
        hashes = np.empty((len(starts_char), max(f.maxn - first + 1, 0)), np.uint32)
        ok = np.zeros(hashes.shape, bool)
        h = np.full(len(starts_char), 2166136261, np.uint32)
        for n in range(1, f.maxn + 1):
            c = np.minimum(np.arange(len(starts_char)) + n - 1, len(starts_char) - 1)  # the n-gram's n-th character
            pos = starts_char[c]
            h = (h ^ signed[pos]) * np.uint32(16777619)
            multi = np.flatnonzero(char_bytes[c] > 1)
            for extra in range(1, 4):  # the other bytes of multi-byte characters
                multi = multi[char_bytes[c[multi]] > extra]
                if not len(multi):
                    break
                h[multi] = (h[multi] ^ signed[pos[multi] + extra]) * np.uint32(16777619)
            if n >= first:
                hashes[:, n - first] = h
                ok[:, n - first] = (room >= n) & ~eos[token_of]
                if n == 1:  # fastText skips the single characters "<" and ">"
                    ok[:, 0] &= (within > 0) & (room > 1)
        g = np.nonzero(ok)[0]  # row-major: by character, then length, as fastText's two loops
        h = (hashes[ok] % np.uint32(f.bucket)).astype(np.intp)
        owner = token_of[g]
        if self.pruned is None:
            ngram_ids, owner_kept = f.nwords + h, owner
        else:
            kept_index = self.pruned[h]
            kept = kept_index >= 0
            ngram_ids, owner_kept = f.nwords + kept_index[kept], owner[kept]
        word_ids = np.array([f.words.get(t, -1) for t in tokens], np.int64)
        has_word = np.flatnonzero(word_ids >= 0)
        owners = np.concatenate([has_word, owner_kept])
        ids = np.concatenate([word_ids[has_word], ngram_ids])[np.argsort(owners, kind="stable")]
        return ids.astype(np.intp), np.bincount(owners, minlength=len(tokens))

    def _entries(self, tokens: list[str]) -> np.ndarray:
        """Cache entry of each token (its row ids are ``_flat[start:start + length]``), with the ids
        of the tokens not seen yet computed by `_subword_ids` (entries past a full cache serve
        this call only)."""
        cache = self.cache
        entries = list(map(cache.get, tokens))  # entry + 1, so that every cached token is truthy
        if None in entries:
            new = list(dict.fromkeys(compress(tokens, map(operator.not_, entries))))
            flat, lengths = self._subword_ids(new)
            first, start = len(cache), self._size  # the new entries go after the cached ones
            need = start + int(lengths.sum())
            if need > len(self._flat):
                self._flat = np.resize(self._flat, max(need, 2 * len(self._flat)))
            if first + len(new) > len(self._lengths):
                grow = max(first + len(new), 2 * len(self._lengths))
                self._starts, self._lengths = np.resize(self._starts, grow), np.resize(self._lengths, grow)
            self._starts[first : first + len(new)] = start + np.cumsum(lengths) - lengths
            self._lengths[first : first + len(new)] = lengths
            self._flat[start:need] = flat
            # Kept while the cache has room. Once it holds MAX_CACHED_TOKENS it stops growing: the
            # tokens seen first (the frequent ones) stay, and a later new token is looked up each time.
            kept = len(new) if first + len(new) <= MAX_CACHED_TOKENS else max(MAX_CACHED_TOKENS - first, 0)
            cache.update(zip(new[:kept], range(first + 1, first + kept + 1)))
            self._size = start + int(lengths[:kept].sum())
            if kept == len(new):
                entries = list(map(cache.get, tokens))
            else:  # this call's entries past the full cache
                slot = dict(zip(new, range(first + 1, first + len(new) + 1)))
                entries = [e if e is not None else slot[t] for t, e in zip(tokens, entries)]
        return np.array(entries, np.intp) - 1

    def predict(self, texts: list[str]) -> list[tuple[str, float]]:
        """``(label without __label__, probability)`` per text, as ``model.predict(texts, k=1)``
        gives (``("", 0.0)`` where fastText predicts nothing). Texts must not contain newlines."""
        out: list[tuple[str, float] | None] = [None] * len(texts)
        fast, tokens, ends = [], [], []
        for i, text in enumerate(texts):
            if "__label__" in text or "</s>" in text or "\n" in text:  # fastText raises on a newline
                out[i] = self._fasttext(text)
                self.fallbacks += 1
                continue
            tokens += [t for t in _FASTTEXT_SPLIT(text) if t] if _PYTHON_ONLY_SPACE(text) else text.split()
            tokens.append("</s>")  # fastText's end of line, which predict's "\n" adds
            ends.append(len(tokens))
            fast.append(i)
        if not fast:
            return out  # type: ignore[return-value]
        try:
            entries = self._entries(tokens)
        except UnicodeEncodeError:  # lone surrogates: whatever fastText does with them
            return [self._fasttext(t) for t in texts]
        lengths = self._lengths[entries]
        starts = self._starts[entries]
        offsets = np.cumsum(lengths)
        ids = self._flat[np.arange(offsets[-1]) + np.repeat(starts - (offsets - lengths), lengths)]
        bounds = np.concatenate([[0], offsets[np.array(ends) - 1]])
        counts = np.diff(bounds)
        hidden = np.empty((len(fast), self.rows_pad.shape[1]), np.float32)
        order = np.argsort(counts, kind="stable")
        for chunk in np.array_split(order, -(-len(order) // _CHUNK)):
            # Model::computeHidden, for a chunk of similar-length docs at once: the rows of each doc
            # stacked along axis 0 (padded with a zero row, exact in float32), summed in order
            # (numpy reduces axis 0 row by row), times float(1 / n)
            n = counts[chunk]
            within = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
            index = np.full((int(n.max()), len(chunk)), self.rows_pad.shape[0] - 1, np.intp)
            index[within, np.repeat(np.arange(len(chunk)), n)] = ids[np.repeat(bounds[chunk], n) + within]
            hidden[chunk] = np.add.reduce(self.rows_pad[index], axis=0) * (1.0 / n).astype(np.float32)[:, None]
        self._tree(hidden, fast, texts, out)
        return out  # type: ignore[return-value]

    def _tree(self, hidden: np.ndarray, index: list[int], texts: list[str], out: list) -> None:
        # DenseMatrix::dotRow: float32 sum over columns in order, for every internal node
        x = np.zeros((len(hidden), self.osz), np.float32)
        for j, column in enumerate(self.output_columns):
            x += hidden[:, j : j + 1] * column
        # approximate node probabilities (double exp) to find the best leaf; the path is then redone with expf
        with np.errstate(over="ignore"):  # expf overflows to inf as well: p = 0
            p = (1.0 / (np.float32(1) + np.exp(-x.astype(np.float64)).astype(np.float32))).astype(np.float32)
        log_left = np.log((1.0 - p).astype(np.float32).astype(np.float64) + 1e-5).astype(np.float32)
        log_right = np.log(p.astype(np.float64) + 1e-5).astype(np.float32)
        score = np.zeros((len(hidden), 2 * self.osz - 1), np.float32)
        for parents, lefts, rights in self.levels:
            score[:, lefts] = score[:, parents] + log_left[:, parents - self.osz]
            score[:, rights] = score[:, parents] + log_right[:, parents - self.osz]
        leaves = score[:, : self.osz]
        top2 = np.partition(leaves, self.osz - 2, axis=1)[:, -2:]
        best = leaves.argmax(axis=1)
        unsure = (top2[:, 1] - top2[:, 0] < TIE_MARGIN) | (top2[:, 1] < self.threshold_score + TIE_MARGIN)
        for row in np.flatnonzero(unsure):
            out[index[row]] = self._fasttext(texts[index[row]])
            self.fallbacks += 1
        rows = np.flatnonzero(~unsure)
        if not len(rows):
            return
        # the best leaf's path again, exactly: f = float(1 / (1 + expf(-x))) with the C library's expf,
        # score = float32 sum, root first, of float(log(p + 1e-5)), probability expf(score)
        leaf = best[rows]
        on_path = self.path_length[leaf][:, None] > np.arange(self.path_nodes.shape[1])
        nodes = self.path_nodes[leaf]
        expf = self.expf
        e = np.array([expf(v) for v in (-x[rows[:, None], nodes][on_path]).tolist()], np.float32)
        f = (1.0 / (np.float32(1) + e).astype(np.float64)).astype(np.float32)
        p = np.where(self.path_right[leaf][on_path], f.astype(np.float64), (1.0 - f.astype(np.float64)).astype(np.float32))
        logs = np.zeros(nodes.shape, np.float32)  # adding float32 0.0 past a path's end changes nothing
        logs[on_path] = np.array([math.log(v + 1e-5) for v in p.tolist()], np.float64).astype(np.float32)
        score = np.zeros(len(rows), np.float32)
        for k in range(logs.shape[1]):
            score += logs[:, k]
        for row, leaf_id, sc in zip(rows.tolist(), leaf.tolist(), score.tolist()):
            out[index[row]] = (self.labels[leaf_id], float(np.float32(expf(sc))))
