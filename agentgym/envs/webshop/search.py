"""BM25 search over the catalogue, as WebShop's Lucene index searches it, with ``bm25s``.

Upstream (princeton-nlp/WebShop, ``search_engine/``) indexes one document per product: the title,
the description, the first bullet point and ``"<option>: <v1>, <v2>, and <option>: ..."``, lower-cased,
with Pyserini/Lucene (BM25 with k1 = 0.9, b = 0.4, Porter stemming, Lucene's English stop words), and a
search returns the top 50. The same document text, parameters, stemmer and stop words are used here;
the tokenizer differs slightly (bm25s keeps runs of two or more word characters, Lucene's standard
tokenizer also keeps one-character tokens), so rare ties may order differently.
"""

from __future__ import annotations

import bm25s
import numpy as np
import Stemmer

from agentgym.envs.webshop.data import Product

TOP_N = 50
K1, B = 0.9, 0.4  # Pyserini's BM25 defaults
# Lucene's EnglishAnalyzer stop words
LUCENE_STOP_WORDS = [
    "a",
    "an",
    "and",
    "are",
    "as",
    "at",
    "be",
    "but",
    "by",
    "for",
    "if",
    "in",
    "into",
    "is",
    "it",
    "no",
    "not",
    "of",
    "on",
    "or",
    "such",
    "that",
    "the",
    "their",
    "then",
    "there",
    "these",
    "they",
    "this",
    "to",
    "was",
    "will",
    "with",
]


def product_document(product: Product) -> str:
    option_text = ", and ".join(f"{name}: {', '.join(values)}" for name, values in product.options.items())
    first_bullet = product.bullet_points[0] if product.bullet_points else ""
    return " ".join([product.title, product.description, first_bullet, option_text]).lower()


class SearchEngine:
    """``search(query)`` returns the ASINs of the top 50 products, best first."""

    def __init__(self, products: list[Product]) -> None:
        self.asins = [p.asin for p in products]
        stemmer = Stemmer.Stemmer("porter")
        self.tokenizer = bm25s.tokenization.Tokenizer(stopwords=LUCENE_STOP_WORDS, stemmer=stemmer.stemWord)
        corpus = self.tokenizer.tokenize(
            [product_document(p) for p in products], show_progress=False, return_as="tuple"
        )
        self.index = bm25s.BM25(k1=K1, b=B, method="lucene")
        self.index.index(corpus, show_progress=False)
        self.vocabulary = set(self.tokenizer.get_vocab_dict())

    def search(self, query: str, k: int = TOP_N) -> list[str]:
        tokens = self.tokenizer.tokenize(
            [query], update_vocab=False, show_progress=False, return_as="string"
        )[0]
        tokens = [t for t in tokens if t in self.vocabulary]
        if not tokens:
            return []
        scores = self.index.get_scores(tokens)
        # best first; ties keep catalogue order, as Lucene breaks ties by document id
        order = np.argsort(-scores, kind="stable")[:k]
        return [self.asins[i] for i in order if scores[i] > 0]
