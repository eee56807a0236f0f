"""Evaluation of float, fake-quantized and integer-only models: perplexity on held-out text,
top-1 agreement with float greedy decoding, sentence-embedding cosine similarity, and the
result tables of docs/results.md (``refq eval`` / ``refq generate``)."""

from refq.evaluation.agreement import AgreementResult, greedy_segments, top1_agreement
from refq.evaluation.embeddings import EmbeddingResult, compare_embeddings, cosine_rows
from refq.evaluation.perplexity import PerplexityResult, eval_windows, evaluate_perplexity

__all__ = [
    "AgreementResult",
    "EmbeddingResult",
    "PerplexityResult",
    "compare_embeddings",
    "cosine_rows",
    "eval_windows",
    "evaluate_perplexity",
    "greedy_segments",
    "top1_agreement",
]
