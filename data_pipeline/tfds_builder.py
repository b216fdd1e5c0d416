"""A TFDS builder that turns local text files into an array_record TFDS dataset.

With it, local text goes through the same TFDS path as public datasets
(`prepare(..., tfds_name="local_text_corpus:text", options=PrepareOptions(tfds_data_dir=...))`),
and the corpus can be shared as a standard TFDS directory. Each example is one document: `text`
holds its sentences one per line (BERT format), `source` the file and line it came from.
Building and reading need no tensorflow.
"""
from __future__ import annotations

from collections.abc import Sequence

import tensorflow_datasets as tfds

from data_pipeline import corpus


class LocalTextCorpus(tfds.core.GeneratorBasedBuilder):
  """Documents from local text files (see corpus.TEXT_FORMATS for the layouts)."""

  VERSION = tfds.core.Version("1.0.0")

  def __init__(self, *, files: Sequence[str] = (), text_format: str = "bert", **kwargs):
    self._files = list(files)
    self._text_format = text_format
    self.skips = corpus.SkipLog()
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="Local text corpus, one document per example.",
        features=tfds.features.FeaturesDict({"text": tfds.features.Text(),
                                             "source": tfds.features.Text()}))

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    for i, doc in enumerate(corpus.iter_text_documents(self._files, self._text_format,
                                                       self.skips)):
      yield i, {"text": "\n".join(doc.sentences), "source": doc.source}


def build_local_tfds(inputs: str | Sequence[str], data_dir: str,
                     text_format: str = "bert") -> tuple[str, corpus.SkipLog]:
  """Writes local text as the TFDS dataset `local_text_corpus` under `data_dir`.

  Returns the spec to give `prepare` ("local_text_corpus:text") and what was skipped.
  """
  files = corpus.expand_inputs(inputs)
  builder = LocalTextCorpus(files=files, text_format=text_format, data_dir=data_dir,
                            file_format="array_record")
  builder.download_and_prepare()
  return "local_text_corpus:text", builder.skips
