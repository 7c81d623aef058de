"""The streaming part of the feature index: per-feature statistics merged chunk by chunk.

`FeatureStats.add` takes the sparse codes of one chunk of whole windows and folds them
into running state whose size does not grow with the store (apart from the sparse
(offset, token, feature) counts, which grow with the number of distinct pairs seen):

- firing counts, activation sums, log-spaced histogram counts;
- top-k examples: per feature, the windows with the highest peak (the window's largest
  activation, earliest position on ties), ranked by (peak desc, position asc);
- a deterministic uniform sample of firings: per feature, the `reservoir` firings with
  the smallest `sample_priority(position, feature, seed)` (a bottom-k sample: the same
  set whatever the chunking, so a resumed build equals an uninterrupted one);
- for offsets 0..lookahead: how often each token sits d positions after a firing of each
  feature (and, for the base rates, after any indexed position); see `pair_tables`;
- optionally, article-aligned sums around " a" / " an" (`sae.index.aligned.ArticleProfile`).

Examples keep their context activations (the feature's value at each position of the
window from `before` tokens before to `after` tokens after), taken from the chunk in
which they enter; token ids are looked up in the store at the end.
"""

from __future__ import annotations

import numpy as np

from sae.errors import SaexError
from sae.index.encoder import bit_width, value_key

_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_G, _F, _S = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xD1B54A32D192ED03), np.uint64(0x8CB92BA72F3D8DD7)
POS_BITS = 40  # global positions up to 2^40 tokens; features take the bits above


def sample_priority(position: np.ndarray, feature: np.ndarray, seed: int = 0) -> np.ndarray:
    """The priority of a firing in the example sample (smaller = sampled first): the top
    32 bits of splitmix64(position, feature, seed); equal priorities go to the earlier position."""
    with np.errstate(over="ignore"):
        z = (position.astype(np.uint64) * _G + feature.astype(np.uint64) * _F + np.uint64(seed) * _S)
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(32)).astype(np.int64)


def hist_edges(lo_exp: int = -10, hi_exp: int = 14, per_octave: int = 4) -> np.ndarray:
    """Log-spaced bin edges 2^lo_exp .. 2^hi_exp; the first and last bins also take the
    values below and above that range."""
    return np.exp2(np.arange(lo_exp * per_octave, hi_exp * per_octave + 1) / per_octave).astype(np.float32)


def hist_bins(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each |value| (bin i = [edges[i], edges[i+1])), clamped into range."""
    return np.clip(np.searchsorted(edges, np.abs(values), side="right") - 1, 0, len(edges) - 2)


def run_starts(sorted_values: np.ndarray) -> np.ndarray:
    """Boolean mask of the first element of each run of equal values."""
    out = np.empty(len(sorted_values), bool)
    out[:1] = True
    np.not_equal(sorted_values[1:], sorted_values[:-1], out=out[1:])
    return out


def run_lengths(starts: np.ndarray, n: int) -> np.ndarray:
    """Lengths of the runs beginning at indices `starts` of an array of length n."""
    out = np.empty(len(starts), np.int64)  # one allocation: large temporaries cost page faults
    np.subtract(starts[1:], starts[:-1], out=out[:-1])
    out[-1:] = n - starts[-1:]
    return out


def group_rank(sorted_groups: np.ndarray) -> np.ndarray:
    """Rank of each element within its run of equal values (the input is grouped)."""
    idx = np.arange(len(sorted_groups))
    return idx - np.maximum.accumulate(np.where(run_starts(sorted_groups), idx, 0))


def lex_order(*columns: tuple[np.ndarray, int]) -> np.ndarray:
    """argsort by the columns (most significant first), each a non-negative int array
    below 2^bits: one packed int64 argsort when the bits fit, else np.lexsort. The columns
    must tell all rows apart: the order of equal rows is arbitrary."""
    if sum(b for _, b in columns) <= 63:
        key = np.zeros(len(columns[0][0]), np.int64)
        for col, b in columns:
            key = (key << b) | col
        return np.argsort(key)
    return np.lexsort([c for c, _ in reversed(columns)])


class _ChunkLookup:
    """A feature's activation at any position of the current chunk (0 where it did not fire)."""

    def __init__(self, f: np.ndarray, p: np.ndarray, v: np.ndarray, window: int, n_positions: int, d_sae: int):
        self.pb = bit_width(n_positions)
        if bit_width(d_sae) + self.pb <= 31:  # value bits ride along: a plain sort, no argsort
            packed = np.sort((((f << self.pb) | p) << 32) | np.ascontiguousarray(v, np.float32).view(np.uint32))
            self.key, self.v = packed >> 32, (packed & 0xFFFFFFFF).astype(np.uint32).view(np.float32)
        else:
            key = (f << POS_BITS) | p
            self.pb = POS_BITS
            order = np.argsort(key)
            self.key, self.v = key[order], v[order]
        self.window = window

    def contexts(self, f: np.ndarray, p: np.ndarray, before: int, after: int) -> np.ndarray:
        """"n (before+1+after)" activations of feature f[i] around chunk position p[i],
        within p[i]'s window (0 outside it)."""
        width = before + 1 + after
        out = np.zeros((len(f), width), np.float32)
        if len(f) == 0:
            return out
        start = p - p % self.window
        lo = np.maximum(p - before, start)
        hi = np.minimum(p + after, start + self.window - 1)
        idx = np.searchsorted(self.key, (f << self.pb) | lo)
        end = (f << self.pb) | hi
        rows = np.arange(len(f))
        mask = (1 << self.pb) - 1
        # Walk forward through this feature's firings in [lo, hi]: runs are short.
        for _ in range(width):
            ok = idx < len(self.key)
            ok[ok] = self.key[idx[ok]] <= end[ok]
            if not ok.any():
                break
            r, i = rows[ok], idx[ok]
            out[r, (self.key[i] & mask) - p[r] + before] = self.v[i]
            idx = idx + 1
        return out


class FeatureStats:
    """Running per-feature statistics (see the module docstring).

    Examples live in per-feature rows of `keep` slots sorted best first by (key, position):
    top examples by value_key (highest peak first), samples by sample_priority; empty
    slots hold the key EMPTY and position -1."""

    TOP_EMPTY = 1 << 32
    SAMPLE_EMPTY = 1 << 32

    def __init__(self, d_sae: int, vocab_size: int, context_size: int, top_k: int = 20, reservoir: int = 40,
                 before: int = 10, after: int = 5, lookahead: int = 3, seed: int = 0,
                 edges: np.ndarray | None = None, pair_buckets: int = 64, bucket_budget: int = 1_000_000,
                 aligned=None, max_pair_entries: int | None = None):
        self.d_sae, self.vocab, self.T = d_sae, vocab_size, context_size
        self.K, self.R, self.before, self.after = top_k, reservoir, before, after
        self.offsets = np.arange(lookahead + 1)
        self.seed = seed
        self.edges = hist_edges() if edges is None else edges
        C, F, nb = before + 1 + after, d_sae, len(self.edges) - 1
        if bit_width(F) + POS_BITS > 63:
            raise ValueError(f"d_sae {F} is too large for the index's sort keys")
        self.state = {
            "n_tokens": np.zeros(1, np.int64),
            "fires": np.zeros(F, np.int64),
            "act_sum": np.zeros(F, np.float64),
            "hist": np.zeros((F, nb), np.int64),
            "top_key": np.full((F, self.K), self.TOP_EMPTY, np.int64),
            "top_val": np.full((F, self.K), -np.inf, np.float32),
            "top_pos": np.full((F, self.K), -1, np.int64),
            "top_ctx": np.zeros((F, self.K, C), np.float32),
            "smp_key": np.full((F, self.R), self.SAMPLE_EMPTY, np.int64),
            "smp_val": np.zeros((F, self.R), np.float32),
            "smp_pos": np.full((F, self.R), -1, np.int64),
            "smp_ctx": np.zeros((F, self.R, C), np.float32),
            # (offset * (vocab + 1) + token) * d_sae + feature, ascending; token `vocab` is
            # the window's end (no token that far after the firing)
            "pair_key": np.zeros(0, np.int64),
            "pair_count": np.zeros(0, np.int64),
            "token_count": np.zeros((len(self.offsets), vocab_size + 1), np.int64),
        }
        self.max_pair_entries = max_pair_entries
        self.aligned = aligned  # a sae.index.aligned.ArticleProfile, or None
        if aligned is not None:
            self.state.update(aligned.init_state())
        # The (offset, token, feature) counts live in key-range buckets between flushes: each
        # chunk's sorted run is split among them, and a bucket merges its pending runs once
        # they pass `bucket_budget` entries, so merging is spread over the pass in pieces that
        # fit in cache; a sort of the whole state at once would stall the pass for seconds.
        self.n_buckets, self.bucket_budget = pair_buckets, bucket_budget
        keyspace = len(self.offsets) * (vocab_size + 1) * d_sae
        self._edges = np.arange(self.n_buckets + 1, dtype=np.int64) * -(-keyspace // self.n_buckets)
        self._pending: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(self.n_buckets)]
        self._pending_n = np.zeros(self.n_buckets, np.int64)
        self._buckets: list[tuple[np.ndarray, np.ndarray]] | None = None  # None: slices of the state
        self._changed = False

    # ------------------------------------------------------------------ one chunk

    def add(self, first_position: int, tokens: np.ndarray, ordinary: np.ndarray,
            f: np.ndarray, p: np.ndarray, v: np.ndarray) -> None:
        """Fold in one chunk of whole windows.

        first_position: global position (window * context_size) of the chunk's first token;
        tokens: "window pos" ids; ordinary: flat chunk positions that were encoded;
        (f, p, v): firings (feature, flat chunk position, activation), v != 0."""
        s, F = self.state, self.d_sae
        tok = tokens.reshape(-1).astype(np.int64)
        if len(tok) and (tok.max() >= self.vocab or tok.min() < 0):
            raise ValueError(f"token id {tok.max()} outside the vocabulary of {self.vocab}")
        f, p, v = (np.asarray(a, dtype=t) for a, t in ((f, np.int64), (p, np.int64), (v, np.float32)))
        s["n_tokens"][0] += len(ordinary)
        s["fires"] += np.bincount(f, minlength=F)
        s["act_sum"] += np.bincount(f, weights=v, minlength=F)
        nb = s["hist"].shape[1]
        s["hist"] += np.bincount(f * nb + hist_bins(v, self.edges), minlength=F * nb).reshape(F, nb)
        self._add_pairs(tok, ordinary, f, p)
        if self.max_pair_entries is not None and (n := self.pair_entries()) > self.max_pair_entries:
            cap = self.max_pair_entries
            raise SaexError(f"the upcoming-token tables reached {n:,} (offset, token, feature) entries, more than "
                            f"max_pair_entries = {cap:,} (a build peaks at about 100 bytes per entry: "
                            f"{100 * cap / 1e9:.0f} GB at the bound)", "pass a larger --max-pair-entries if the "
                            "memory is there (a rerun resumes after the last saved shard), a smaller --lookahead, "
                            "or a smaller store")
        if self.aligned is not None:
            self.aligned.add(s, tok, ordinary, f, p, v)
        lookup = None

        def ctx(ff, pp):
            nonlocal lookup
            lookup = lookup or _ChunkLookup(f, p, v, self.T, len(tok), F)
            return lookup.contexts(ff, pp, self.before, self.after)

        self._add_top(first_position, len(tok), f, p, v, ctx)
        self._add_samples(first_position, len(tok), f, p, v, ctx)

    def _add_pairs(self, tok: np.ndarray, ordinary: np.ndarray, f: np.ndarray, p: np.ndarray) -> None:
        s, F, V, T, L = self.state, self.d_sae, self.vocab, self.T, len(self.offsets)
        # Windows padded with the end-of-window token V: no masks for positions past the end.
        padded = np.full((len(tok) // T, T + L), V, np.int32)
        padded[:, :T] = tok.reshape(-1, T)
        padded = padded.reshape(-1)
        small = L * (V + 1) * F < 2 ** 31
        at_fire = p + (p // T) * L
        at_ord = ordinary + (ordinary // T) * L
        ff = f.astype(np.int32) if small else f
        keys = np.empty(L * len(f), np.int32 if small else np.int64)
        for i, d in enumerate(self.offsets):
            s["token_count"][i] += np.bincount(padded[at_ord + d], minlength=V + 1)
            part = keys[i * len(f):(i + 1) * len(f)]
            np.add(padded[at_fire + d], i * (V + 1), out=part, casting="unsafe")
            part *= F
            part += ff
        self._add_run(keys)

    def _add_run(self, keys: np.ndarray) -> None:
        """Sort one chunk's keys into a run of (key, count) while the encoder works on the
        next chunk, split it among the key-range buckets, and merge the buckets whose
        pending runs pass the budget."""
        if len(keys) == 0:
            return
        keys.sort()
        start = np.flatnonzero(run_starts(keys))
        k, c = keys[start].astype(np.int64), run_lengths(start, len(keys))
        bounds = np.searchsorted(k, self._edges)
        for b in np.flatnonzero(bounds[1:] > bounds[:-1]):
            lo, hi = bounds[b], bounds[b + 1]
            self._pending[b].append((k[lo:hi], c[lo:hi]))
            self._pending_n[b] += hi - lo
            if self._pending_n[b] > self.bucket_budget:
                self._merge_bucket(b)

    def _merge_bucket(self, b: int) -> None:
        if self._buckets is None:  # slices (views) of the merged state, one per bucket
            key, count = self.state["pair_key"], self.state["pair_count"]
            bounds = np.searchsorted(key, self._edges)
            self._buckets = [(key[lo:hi], count[lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:])]
        self._buckets[b] = self._merge_counts([self._buckets[b]] + self._pending[b])
        self._pending[b], self._pending_n[b] = [], 0
        self._changed = True

    def _merge_counts(self, runs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        """Sorted runs of unique keys with counts -> one, the counts of equal keys summed."""
        keys, counts = (np.concatenate([r[i] for r in runs]) for i in (0, 1))
        if len(keys) == 0:
            return keys, counts
        cb = 63 - bit_width(len(self.offsets) * (self.vocab + 1) * self.d_sae)
        if cb >= bit_width(int(counts.max()) * len(runs)):
            # Counts ride in the low bits: one sort of the packed keys brings each key's runs together.
            packed = (keys << cb) | counts
            packed.sort()
            key = packed >> cb
            start = np.flatnonzero(run_starts(key))
            return key[start], np.add.reduceat(packed & ((1 << cb) - 1), start)
        order = np.argsort(keys, kind="stable")
        keys, counts = keys[order], counts[order]
        start = np.flatnonzero(run_starts(keys))
        return keys[start], np.add.reduceat(counts, start)

    def pair_tables(self) -> dict[str, np.ndarray]:
        """The (offset, token, feature) counts without end-of-window entries, plus
        fires_at "offset d_sae" (firings with a token d positions later), token_count
        "offset vocab" (indexed positions followed by the token d positions later) and
        positions_at "offset" (indexed positions with a token d positions later)."""
        self.flush()
        s, F, V = self.state, self.d_sae, self.vocab
        key, count = s["pair_key"], s["pair_count"]
        # Keys sort by (offset, token, feature): each offset's end-of-window entries (token V)
        # are one contiguous range, and re-basing on a vocabulary of V subtracts offset * F.
        fires_at = np.tile(s["fires"], (len(self.offsets), 1))
        parts_k, parts_c = [], []
        for d in range(len(self.offsets)):
            lo, end, hi = np.searchsorted(key, [d * (V + 1) * F, (d * (V + 1) + V) * F, (d + 1) * (V + 1) * F])
            fires_at[d, key[end:hi] % F] -= count[end:hi]  # one entry per (offset, feature)
            parts_k.append(key[lo:end] - d * F)
            parts_c.append(count[lo:end])
        key, count = np.concatenate(parts_k), np.concatenate(parts_c)
        return {"pair_key": key, "pair_count": count, "fires_at": fires_at,
                "token_count": s["token_count"][:, :V], "positions_at": s["token_count"][:, :V].sum(1)}

    def pair_entries(self) -> int:
        """Entries the (offset, token, feature) count tables hold now, pending runs included
        (what the build's memory grows with: 16 bytes each here, about 100 at the finishing sorts)."""
        merged = len(self.state["pair_key"]) if self._buckets is None else sum(len(k) for k, _ in self._buckets)
        return merged + int(self._pending_n.sum())

    def flush(self) -> None:
        """Merge every bucket's pending runs, and the buckets into the state's sorted
        `pair_key` / `pair_count`."""
        for b in np.flatnonzero(self._pending_n):
            self._merge_bucket(b)
        if self._changed:
            s = self.state
            s["pair_key"] = np.concatenate([k for k, _ in self._buckets])
            s["pair_count"] = np.concatenate([c for _, c in self._buckets])
            self._buckets, self._changed = None, False

    # ------------------------------------------------------------------ examples

    def _merge(self, prefix: str, empty: int, first: int, f: np.ndarray, key: np.ndarray, pos: np.ndarray,
               values: dict[str, np.ndarray], ctx) -> None:
        """Merge new entries (sorted by feature, key, position; positions later than every
        stored one, so stored entries win ties) into the rows of the features they touch,
        keeping each row's best slots. A sorted merge by binary search: stored rows are
        not re-sorted."""
        s = self.state
        keys_name, pos_name = f"{prefix}_key", f"{prefix}_pos"
        keep = s[keys_name].shape[1]
        best = group_rank(f) < keep  # a feature's new entries beyond its best `keep` cannot be kept
        if not best.all():
            f, key, pos = f[best], key[best], pos[best]
            values = {k: v[best] for k, v in values.items()}
        row_start = np.flatnonzero(run_starts(f))  # f is sorted: no np.unique (which sorts again)
        touched = f[row_start]
        row = np.repeat(np.arange(len(touched)), run_lengths(row_start, len(f)))
        shift = bit_width(empty)
        old_key = s[keys_name][touched]
        old_g = ((np.arange(len(touched))[:, None] << shift) | old_key).reshape(-1)  # ascending
        new_g = (row << shift) | key  # ascending
        rank_new = np.searchsorted(old_g, new_g, side="right") - row * keep + group_rank(row)
        slot = np.tile(np.arange(keep), len(touched))
        rank_old = slot + np.searchsorted(new_g, old_g, side="left") - row_start[old_g >> shift]
        keep_old = (rank_old < keep) & (old_key.reshape(-1) != empty)
        keep_new = rank_new < keep
        flat_old = np.repeat(np.arange(len(touched)), keep) * keep + rank_old
        dest_new = row[keep_new] * keep + rank_new[keep_new]
        ctx_new = ctx(f[keep_new], pos[keep_new] - first)
        for name in (keys_name, pos_name, f"{prefix}_val", f"{prefix}_ctx"):
            old = s[name][touched]
            tail = old.shape[2:]
            out = np.empty((len(touched) * keep,) + tail, old.dtype)
            out[...] = {keys_name: empty, pos_name: -1}.get(name, 0)
            out[flat_old[keep_old]] = old.reshape((-1,) + tail)[keep_old]
            new = {keys_name: key, pos_name: pos}.get(name)
            new = values[name] if new is None and name in values else new
            out[dest_new] = ctx_new if new is None else new[keep_new]
            s[name][touched] = out.reshape(old.shape)
        if prefix == "top":  # an empty top slot reads as -inf
            s["top_val"][s["top_key"] == empty] = -np.inf

    def _add_top(self, first, n_positions, f, p, v, ctx) -> None:
        """Per (feature, window) the peak (highest value, earliest position), merged into
        the feature's best windows."""
        s = self.state
        cand = v > s["top_val"][:, self.K - 1][f]  # a tie goes to the stored, earlier peak
        if not cand.any():
            return
        fc, pc, vc = f[cand], p[cand], v[cand]
        kc = value_key(vc)
        T = self.T
        order = lex_order((fc, bit_width(self.d_sae)), (pc // T, bit_width(n_positions // T)), (kc, 32),
                          (pc % T, bit_width(T)))
        fc, pc, kc, vc = fc[order], pc[order], kc[order], vc[order]
        group = fc * (n_positions // T + 1) + pc // T
        peak = run_starts(group)  # first of each (feature, window): its peak
        fc, pc, kc, vc = fc[peak], pc[peak], kc[peak], vc[peak]
        order = lex_order((fc, bit_width(self.d_sae)), (kc, 32), (pc, bit_width(n_positions)))
        self._merge("top", self.TOP_EMPTY, first, fc[order], kc[order], first + pc[order], {"top_val": vc[order]}, ctx)

    def _add_samples(self, first, n_positions, f, p, v, ctx) -> None:
        s = self.state
        key = sample_priority(first + p, f, self.seed)
        cand = key < s["smp_key"][:, self.R - 1][f]
        if not cand.any():
            return
        fc, pc, kc, vc = f[cand], p[cand], key[cand], v[cand]
        order = lex_order((fc, bit_width(self.d_sae)), (kc, 32), (pc, bit_width(n_positions)))
        self._merge("smp", self.SAMPLE_EMPTY, first, fc[order], kc[order], first + pc[order],
                    {"smp_val": vc[order]}, ctx)
