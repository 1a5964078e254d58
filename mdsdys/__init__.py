"""mdsdys: find dysplastic cells in bone-marrow smears, the loop of Lee et al. 2022 and beyond.

The packages follow the loop, each importing only those listed below it (docs/ARCHITECTURE.md;
the contracts in pyproject.toml are checked in CI):

- cli          the `mdsdys` command, a thin layer over the library
- app          the Streamlit adapter the pages call (the only importer of streamlit)
- demo         the seeded synthetic study and demo accounts
- jobs         the worker process and its handlers (jobs.worker, jobs.handlers) over the queue (jobs.queue)
- report       5. Dashboard: WHO numbers per slide, charts, exports
- registry     4. Retrain: model versions, retraining from the store, the promotion gate, rollback
- review       2-3. Review and consensus: blinded reads, settling disagreements, agreement, Grad-CAM
- classify     the cell classifier: architectures, inputs, training, proposals, Grad-CAM, metrics
- segment      the nucleus U-Net: augmentation, post-processing, scale, detection, training, evaluation
- annotate     1. Annotate: nucleus masks, canvas geometry, each slide's scale
- ingest       bringing images in: fields, labelled cells, fields with masks
- imaging      images without models: safe decoding, crops, thumbnails, stain colour (torch-free)
- accounts     who may do what: accounts, passwords, roles
- store        the label store, the only place with SQL
- base modules config, errors, schemes, labels, who, stats, splits, augment, checkpoints, compute
"""
