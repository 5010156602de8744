"""From a report file to a normalized result: reading notes, sections, prompts, the LLM extractor and
its HTTP client, the offline teacher, the organ vocabulary, normalization, and the three-step pipeline.

Imports only ``distill.core``; the pipeline writes through the ``ReportStore`` protocol it defines.
"""
