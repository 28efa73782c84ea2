"""Reading uploads, torch-free: sniffing, zip/tar/folder readers, image, NIfTI and DICOM decoders, curation and
the held-out split, ingestion into the store."""
