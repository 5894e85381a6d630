#!/usr/bin/env bash
# The GPU checks of issues 15 and 16 as one short run on a lent GPU machine (the `device` tool):
# training images/s of the residual GAN and the CIFAR-10 flow U-Net against their plain eager
# references (fp32, bf16, channels-last, torch.compile), and sampling images/s, each a JSON file in $OUT.
#
#   device run:  command "bash benchmarks/gpu_checks.sh", carry [".whl"], timeout_s 480
#   dry run here (CPU, tiny):  DEVICE=cpu QUICK=1 OUT=/tmp/gpu_dry bash benchmarks/gpu_checks.sh
#
# The machine's own Python holds PyTorch with CUDA; the few pure-Python dependencies it lacks travel as
# wheels in .whl/ (git-ignored; `pip download annotated-types --no-deps -d .whl`) and are imported
# from there. Each stage has its own time limit, so one stage that hangs or fails still leaves the
# others' results; a failed stage's error is in $OUT/log.txt.
set -u
OUT=${OUT:-runs/gpu_checks}
DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH="src:$(ls .whl/*.whl 2>/dev/null | tr '\n' ':')${PYTHONPATH:-}"
if [ "${QUICK:-0}" = 1 ]; then  # a dry run of the script itself, not a measurement
    TT=(--steps 1 --repeats 1 --warmup 1); SS=(--batch-size 8 --repeats 1); COMPILE=""
else
    TT=(--steps 20 --repeats 3 --warmup 5); SS=(--batch-size 1000 --repeats 3); COMPILE=",atelier-compile-bf16"
fi
log="$OUT/log.txt"
{ date -u; nvidia-smi -L 2>/dev/null; $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"; } > "$log" 2>&1

stage() {  # stage NAME SECONDS COMMAND...: JSON to $OUT/NAME.json, stderr to the log
    local name=$1 limit=$2; shift 2
    local t0=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.json" 2>> "$log"
    echo "$name: exit $? after $((SECONDS - t0)) s" >> "$log"
}

stage resnet_gan_train 180 $PY benchmarks/train_throughput.py --model resnet-gan --resolution 32 --channels 3 \
    --num-classes 10 --batch-size 128 --n-dis 1 "${TT[@]}" --device "$DEVICE" --json \
    --variants "reference,atelier-fp32,atelier-bf16,atelier-bf16-channels-last${COMPILE}"
# the flow-cifar preset's width (16) is chosen for 2 CPU cores; a GPU is measured at the width it would train: 64
stage flow_cifar_train 180 $PY benchmarks/train_throughput.py --model flow-cifar --model-kwargs '{"width": 64}' \
    --batch-size 128 "${TT[@]}" \
    --device "$DEVICE" --json --variants "reference,atelier-fp32,atelier-bf16,atelier-bf16-channels-last${COMPILE}"
stage flow_cifar_sample 60 $PY benchmarks/sample_speed.py --model flow-cifar --set width=64 --device "$DEVICE" "${SS[@]}" \
    --steps 8,32 --json
stage resnet_gan_sample 30 $PY benchmarks/sample_speed.py --model resnet-gan --set num_classes=10 \
    --device "$DEVICE" "${SS[@]}" --json
cat "$log"
