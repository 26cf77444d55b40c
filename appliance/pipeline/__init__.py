"""The pipeline between ingest and store: how each stage is built and wired (build), and the glue stages that
belong to no single room: routing and preparing complete series (preparer), scoring and recording a result
(scorer), failing a series in one place (failures), and finishing a previous run's work (recovery)."""

from appliance.pipeline.build import Pipeline, build_pipeline

__all__ = ["Pipeline", "build_pipeline"]
