"""DICOM reading and checks, canonical image space, datalists, datasets and transforms."""
