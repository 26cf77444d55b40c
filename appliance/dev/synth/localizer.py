"""Three-plane scout images: the phantom heart cut by axial/coronal/sagittal planes inside a simple torso.

Only good enough to look like a scout and to give the appliance a non-cine series to skip.
"""

from __future__ import annotations

import numpy as np

from appliance.dev.synth.background import FAT, LIVER, LUNG, SOFT_TISSUE
from appliance.dev.synth.geometry import HeartPose, ImagePlane
from appliance.dev.synth.phantom import HeartParams, Layer, render_points


def _ellipsoid(xyz: np.ndarray, centre: np.ndarray, semi: tuple[float, float, float]) -> np.ndarray:
    f = np.sqrt((((xyz - centre) / np.asarray(semi)) ** 2).sum(axis=-1))
    return ((f - 1.0) * min(semi)).astype(np.float32)


def _torso_layers(xyz: np.ndarray, pose: HeartPose) -> list[Layer]:
    heart = pose.centre(0.5)
    midline = np.array([heart[0] - 40.0, heart[1] + 25.0, heart[2]])  # the heart sits left and anterior
    r = np.sqrt(((xyz[..., 0] - midline[0]) / 170.0) ** 2 + ((xyz[..., 1] - midline[1]) / 115.0) ** 2)
    body = ((r - 1.0) * 115.0).astype(np.float32)
    return [
        (body, FAT),
        (body + np.float32(11.0), SOFT_TISSUE),
        (_ellipsoid(xyz, midline + np.array([-45.0, 10.0, -120.0]), (100.0, 85.0, 80.0)), LIVER),
        (_ellipsoid(xyz, midline + np.array([85.0, 5.0, 40.0]), (60.0, 80.0, 120.0)), LUNG),
        (_ellipsoid(xyz, midline + np.array([-85.0, 5.0, 40.0]), (60.0, 80.0, 120.0)), LUNG),
    ]


def render_localizer(params: HeartParams, pose: HeartPose, plane: ImagePlane) -> np.ndarray:
    """Noise-free scout image (float32, rows x cols) at end-diastole."""
    xyz = plane.pixel_points()
    u, v, z = pose.to_heart(xyz)
    edge = max(1.2 * max(plane.pixel_spacing), 0.8)
    return render_points(params, u, v, z, 0.0, edge_mm=edge, background=_torso_layers(xyz, pose))
