"""EEG modality plugin for modal-core (mne I/O and preprocessing, channel-aware patch encoder)."""
