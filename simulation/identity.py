"""Deterministic patient, study, series and instance identifiers for simulated breasts."""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.uid import generate_uid

from ductai.simulation.dicom_writer import DicomIdentity

# Simulated data must be recognisable as such in any PACS it reaches.
PATIENT_PREFIX = "DUCTAI-SIM"


@dataclass(frozen=True)
class StudyIdentities:
    """One simulated breast = one patient and one study; each view its own series."""

    seed: int
    index: int

    @property
    def patient_id(self) -> str:
        return f"{PATIENT_PREFIX}-{self.seed}-{self.index:05d}"

    def _uid(self, *parts: object) -> str:
        # generate_uid with entropy sources is a hash: same inputs, same UID.
        sources = ["ductai-sim", str(self.seed), str(self.index), *map(str, parts)]
        return generate_uid(entropy_srcs=sources)

    def for_view(self, laterality: str, view: str) -> DicomIdentity:
        return DicomIdentity(
            image_id=f"{self.patient_id}_{laterality}{view}",
            patient_id=self.patient_id,
            patient_name=f"SIMULATED^BREAST{self.index:05d}",
            study_instance_uid=self._uid("study"),
            series_instance_uid=self._uid("series", view),
            sop_instance_uid=self._uid("image", laterality, view),
            accession_number=f"S{self.seed % 10000:04d}{self.index:05d}"[:16],
            study_date=f"202601{1 + self.index % 28:02d}",
            study_time="101500",
            instance_number=1 if view == "CC" else 2,
        )


def study_identities(seed: int, index: int) -> StudyIdentities:
    return StudyIdentities(seed=seed, index=index)
