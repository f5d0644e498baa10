"""Our curation steps as datatrove pipeline steps, so datatrove's local, Slurm and Ray
executors can run them at web scale. The document URL is read from ``doc.metadata["url"]``
(configurable); drop reasons become datatrove ``dropped_<reason>`` statistics.

    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from hf_ext.curate.datatrove_steps import datatrove_steps

    if __name__ == "__main__":  # datatrove with workers > 1 needs the guard
        LocalPipelineExecutor(
            pipeline=[JsonlReader("data/"), *datatrove_steps("dclm_baseline"), JsonlWriter("out/")],
            tasks=8, workers=4,
        ).run()
"""

from __future__ import annotations

from copy import deepcopy
from string import Template

from ..errors import InputError
from .base import Doc, Filter, Modifier
from .pipeline import CurationPipeline, LineDedupBucket

try:
    from datatrove.data import DocumentsPipeline
    from datatrove.pipeline.base import PipelineStep
    from datatrove.pipeline.filters.base_filter import BaseFilter
except ImportError as exc:  # pragma: no cover - the curate extra is missing
    raise ImportError("hf_ext.curate.datatrove_steps needs datatrove: pip install 'hf-ext[curate]'.") from exc


def _doc(document, url_key: str) -> Doc:
    # metadata is shared, so counts stored by modifiers (words_before_edits) reach later filters
    return Doc(document.text or "", document.metadata.get(url_key), document.metadata)


class DatatroveFilter(BaseFilter):
    """A hf_ext `Filter` as a datatrove filter (``filter(doc) -> (keep, reason)``).

    Args:
        step (`Filter`):
            The hf_ext filter to run; its ``name`` names the step's datatrove statistics.
        url_key (`str`, *optional*, defaults to `"url"`):
            The ``doc.metadata`` key holding the document's URL.
        batch_size (`int`, *optional*, defaults to `256`):
            Documents passed to the filter's ``check_batch`` at once (model scorers batch them).
        exclusion_writer (*optional*, defaults to `None`):
            A datatrove ``DiskWriter`` that receives the documents this filter drops.
    """

    type = "🔻 - FILTER"

    def __init__(self, step: Filter, url_key: str = "url", batch_size: int = 256, exclusion_writer=None):
        # exclusion_writer: a datatrove DiskWriter that receives the documents this filter drops
        if not isinstance(step, Filter):
            raise InputError(f"DatatroveFilter wraps a hf_ext Filter, got {type(step).__name__}.")
        self.name = f"hf_ext {step.name}"  # before super().__init__, which names the stats
        super().__init__(exclusion_writer, batch_size=batch_size)
        self.step, self.url_key = step, url_key

    def filter(self, doc):
        return self.step.check(_doc(doc, self.url_key))

    def filter_batch(self, batch):
        return self.step.check_batch([_doc(d, self.url_key) for d in batch])


class DatatroveModifier(PipelineStep):
    """A hf_ext `Modifier` (or Llama 3's bucket line dedup, per batch) as a datatrove step.

    Args:
        step (`Modifier` or `LineDedupBucket`):
            The hf_ext modifier to run; a document it leaves empty is dropped (``dropped_<name>``).
        url_key (`str`, *optional*, defaults to `"url"`):
            The ``doc.metadata`` key holding the document's URL.
        batch_size (`int`, *optional*, defaults to `1000`):
            Documents per bucket when `step` is a `LineDedupBucket`; unused for a `Modifier`.
    """

    type = "✂️ - MODIFIER"

    def __init__(self, step: Modifier | LineDedupBucket, url_key: str = "url", batch_size: int = 1000):
        self.name = f"hf_ext {step.name}"
        super().__init__()
        self.step, self.url_key, self.batch_size = step, url_key, batch_size

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if isinstance(self.step, LineDedupBucket):
            from datatrove.utils.batching import batched

            for batch in batched(data, self.batch_size):
                for document, text in zip(batch, self.step.apply([d.text for d in batch])):
                    self.stat_update("modified" if text != document.text else "unchanged")
                    document.text = text
                    yield document
            return
        for document in data:
            with self.track_time():
                text = self.step.modify(_doc(document, self.url_key))
            if not text:  # nothing left: dropped, as CurationPipeline does
                self.stat_update(f"dropped_{self.step.name}")
                continue
            self.stat_update("modified" if text != document.text else "unchanged")
            document.text = text
            yield document


def datatrove_steps(pipeline: str | CurationPipeline, url_key: str = "url", step_options: dict | None = None,
                    exclusion_writer=None) -> list[PipelineStep]:
    """The steps of a named (or built) curation pipeline as datatrove pipeline steps.

    Args:
        pipeline (`str` or `CurationPipeline`):
            A name from `PIPELINES` or a `CurationPipeline`.
        url_key (`str`, *optional*, defaults to `"url"`):
            The ``doc.metadata`` key holding the URL.
        step_options (`dict` or `None`, *optional*, defaults to `None`):
            ``{step: {argument: value}}`` for a named pipeline.
        exclusion_writer (*optional*, defaults to `None`):
            A datatrove ``DiskWriter`` for the dropped documents. Every filter gets its own copy writing under a
            subfolder named after the step (``<output_folder>/<step>/<output_filename>``), as datatrove's filters
            each take one.
    """
    pipe = CurationPipeline.from_name(pipeline, step_options) if isinstance(pipeline, str) else pipeline
    return [DatatroveFilter(s, url_key, exclusion_writer=_writer_for(exclusion_writer, s.name)) if isinstance(s, Filter)
            else DatatroveModifier(s, url_key) for s in pipe.steps]


def _writer_for(writer, step_name: str):
    if writer is None:
        return None
    template = getattr(writer, "output_filename", None)
    if template is None:
        raise InputError(f"exclusion_writer must be a datatrove DiskWriter (e.g. JsonlWriter), got {type(writer).__name__}.")
    copy = deepcopy(writer)
    copy.output_filename = Template(f"{step_name}/{template.template}")
    return copy
