# mk/cuda.mk -- the CUDA check (issue 16; docs/cuda.md).  Not part of `make check`.
#
#   make cuda-debs     download the Debian packages the GPU machine lacks into build/cuda-debs
#   make check-cuda    on a GPU machine: build against the PyTorch wheel's libtorch, run the
#                      TorchScript suites on CUDA (float32 and float16), compare with the CPU,
#                      restore the samples, time library vs eager; report in CHECK_CUDA_OUT
#   make check-cuda CHECK_CUDA_DEVICE=cpu   the same stages on the CPU (dry run, tiny sizes)

CHECK_CUDA_OUT ?= $(if $(OUT),$(OUT),build/check-cuda)

.PHONY: cuda-debs check-cuda

cuda-debs:
	@bash scripts/cuda-debs.sh

check-cuda:
	@bash scripts/check-cuda.sh $(CHECK_CUDA_OUT)
