"""The baseline the pipeline is measured against: plain BERTopic on the same utterances.

    .venv/bin/python bench/baseline_bertopic.py RUN_DIR

RUN_DIR holds utterances.parquet; the coded utterances are the documents.
"""
import json
import sys

import pipeline  # noqa: F401  (offline environment)
import pyarrow.compute as pc
import pyarrow.parquet as pq
from bertopic import BERTopic
from sentence_transformers import SentenceTransformer

from pipeline.models import resolve

utt = pq.read_table(f"{sys.argv[1]}/utterances.parquet").filter(pc.field("coded"))
docs = utt.column("text").to_pylist()
model = BERTopic(embedding_model=SentenceTransformer(str(resolve("minilm").path)))
topics, _ = model.fit_transform(docs)
print(json.dumps({"documents": len(docs), "topics": len(set(topics) - {-1}),
                  "outlier_share": round(sum(t == -1 for t in topics) / len(topics), 4)}))
