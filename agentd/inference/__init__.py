"""Inference: the models agentd serves through vLLM, and how a vLLM server is launched."""

from agentd.inference._tiny_model import MODEL_FILES, build_tiny_model
from agentd.inference._vllm_command import VLLM_SERVER_MODULE, vllm_command

__all__ = [
    # tiny offline model
    "MODEL_FILES",
    "build_tiny_model",
    # vLLM server launch
    "VLLM_SERVER_MODULE",
    "vllm_command",
]
