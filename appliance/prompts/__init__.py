"""Prompt edits of a site: the overlay in the data folder (versions, history, revert) and the edits themselves."""

from appliance.prompts.edit import (
    Edit,
    Neighbour,
    PromptRefused,
    Site,
    add_prompt,
    describe,
    format_history,
    format_nearest,
    history,
    prevalence_matched,
    remove,
    revert,
)
from appliance.prompts.overlay import EditRecord, Effective, LiveBank, Overlay, OverlayError, overlay_dir

__all__ = ["Edit", "EditRecord", "Effective", "LiveBank", "Neighbour", "Overlay", "OverlayError", "PromptRefused",
           "Site", "add_prompt", "describe", "format_history", "format_nearest", "history", "overlay_dir",
           "prevalence_matched", "remove", "revert"]
