#!/usr/bin/env bash
# ScanSide container entrypoint, shared by the Jetson and the T4 images: build the TensorRT plan for this GPU if no
# matching one exists, then `scanside serve`. Research software, not for clinical or diagnostic use.
#
#   docker run ... scanside:<tag>                   build if needed, then serve
#   docker run ... scanside:<tag> probe             what TensorRT, CUDA and GPU the container sees
#   docker run ... scanside:<tag> build --force     rebuild the plan (other build_engine.py options pass through)
#   docker run ... scanside:<tag> <command>         run anything else (e.g. bash)
#
# Environment (all optional):
#   SCANSIDE_CONFIG               configuration file (default /etc/scanside/scanside.toml; without it the built-in
#                                 defaults and SCANSIDE_* variables are used, as set in the Dockerfile)
#   SCANSIDE_TRT_WORKSPACE_MIB    builder workspace limit (each image sets its own: 512 on a Jetson, whose 8 GB
#                                 are shared with the system; 1024 on a T4)
#   SCANSIDE_GPU_RUN_HINT         how this image must be started to see the GPU (for the error message)
#   SCANSIDE_TRT_OPT_LEVEL        builder optimisation level 0-5 (default 3)
#   SCANSIDE_TRT_VERIFY_STUDIES   generated studies compared with ONNX Runtime FP32 (default 12)
set -uo pipefail

CONFIG="${SCANSIDE_CONFIG:-/etc/scanside/scanside.toml}"
BUILD=/opt/scanside/build_engine.py
if [ -f "$CONFIG" ]; then
    settings=(--config "$CONFIG")
    serve_settings=(--config "$CONFIG")
else
    settings=(--config-env)
    serve_settings=()
fi
build_args=(
    "${settings[@]}"
    --workspace-mib "${SCANSIDE_TRT_WORKSPACE_MIB:-1024}"
    --opt-level "${SCANSIDE_TRT_OPT_LEVEL:-3}"
    --verify-studies "${SCANSIDE_TRT_VERIFY_STUDIES:-12}"
)

case "${1:-serve}" in
    probe)
        exec python3 "$BUILD" --probe ;;
    build)
        shift
        exec python3 "$BUILD" "${build_args[@]}" "$@" ;;
    serve)
        shift || true ;;
    *)
        exec "$@" ;;
esac

echo "scanside-entrypoint: looking for a TensorRT plan for this GPU" \
     "(building one if needed; the first build takes minutes)"
python3 "$BUILD" "${build_args[@]}"
rc=$?
case $rc in
    0) echo "scanside-entrypoint: TensorRT plan ready" ;;
    3) echo "scanside-entrypoint: no TensorRT or no GPU visible in the container" \
            "(was it started with ${SCANSIDE_GPU_RUN_HINT:-the NVIDIA container runtime}?);" \
            "the service decides: engine.backend=auto or fallback_to_onnxruntime=true" \
            "runs ONNX Runtime on the CPU" >&2 ;;
    *) echo "scanside-entrypoint: the plan build failed (exit $rc, reason above); nothing was installed." \
            "The service decides: engine.fallback_to_onnxruntime=true runs ONNX Runtime," \
            "otherwise it stops with the reason" >&2 ;;
esac
exec scanside serve "${serve_settings[@]}" "$@"
