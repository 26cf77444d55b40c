"""Results back to PACS: each scored series becomes a DICOM Comprehensive SR in the source study, queued in the
database and delivered over C-STORE and/or into a folder.

source.py captures what the SR copies from the images (patient and study modules, instance references) while the
images are still in the spool; sr.py builds the document; pacs.py sends documents; outbox.py is the thread that
works the persistent queue with bounded retries.
"""
