"""The service: HTTP API, DICOM node and web viewer around one AnalysisService
(docs/serve-design.md)."""
