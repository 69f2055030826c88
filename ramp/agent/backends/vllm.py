"""In-process vLLM engine (``pip install 'ramp[vllm]'``), imported only when this backend is built.

Token prompts go to ``LLM.generate`` as ``TokensPrompt``s with one ``SamplingParams`` per request
(``stop``, ``seed``: each request samples from its own seeded generator, so a rollout does not depend on
its batch; ``logprobs=0`` for the sampled token's log-prob when requested; ``include_stop_str_in_output``
so the text ends with the stop string). The engine runs with ``logprobs_mode="processed_logprobs"``:
log-probs of the distribution a token was sampled from (after temperature and top-p), as the hf
backend records them. Chat requests are rendered with the engine tokenizer's chat template.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ramp import engines
from ramp.agent.backends.base import GenerationRequest, GenerationResult, GenerationStop
from ramp.agent.config import VLLMBackendConfig
from ramp.agent.protocol import encode_prompt


class VLLMBackend:
    def __init__(self, config: VLLMBackendConfig) -> None:
        self._vllm = engines.vllm()
        if not config.model:
            raise ValueError("backend.vllm.model is empty: give a local path or hub name")
        self.llm = self._vllm.LLM(
            model=config.model,
            tensor_parallel_size=config.tensor_parallel_size,
            gpu_memory_utilization=config.gpu_memory_utilization,
            max_model_len=config.max_model_len,
            dtype=config.dtype,
            enable_prefix_caching=config.enable_prefix_caching,
            logprobs_mode="processed_logprobs",
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.max_length: int | None = int(self.llm.llm_engine.model_config.max_model_len)
        eos = self.llm.llm_engine.model_config.hf_config.eos_token_id
        declared = eos if isinstance(eos, list) else [eos] if eos is not None else []
        self.eos_ids = frozenset(int(i) for i in declared) | (
            {int(self.tokenizer.eos_token_id)} if self.tokenizer.eos_token_id is not None else set()
        )

    def update_weights(self, state_dict: dict[str, Any]) -> None:
        """Load new weights (HF parameter names, e.g. a trainer's ``state_dict()``) into every worker's
        model, then drop the prefix cache, whose keys/values came from the old weights."""
        weights = [(name, tensor.detach()) for name, tensor in state_dict.items()]
        self.llm.apply_model(lambda model: model.load_weights(weights=weights))
        self.llm.reset_prefix_cache()

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        TokensPrompt = engines.vllm("inputs").TokensPrompt
        prompts = [
            TokensPrompt(
                prompt_token_ids=r.prompt_ids
                if r.prompt_ids is not None
                else encode_prompt(r.messages or [], self.tokenizer)
            )
            for r in requests
        ]
        params = [
            self._vllm.SamplingParams(
                max_tokens=r.max_new_tokens,
                temperature=r.temperature,
                top_p=r.top_p,
                seed=r.seed,
                stop=list(r.stop) or None,
                include_stop_str_in_output=True,
                logprobs=0 if r.logprobs else None,
            )
            for r in requests
        ]
        outputs = self.llm.generate(prompts, sampling_params=params, use_tqdm=False)
        return [self._result(out.outputs[0], r) for out, r in zip(outputs, requests, strict=True)]

    def _result(self, completion: Any, request: GenerationRequest) -> GenerationResult:
        ids = list(completion.token_ids)
        logprobs = None
        if request.logprobs:
            if not completion.logprobs:
                raise RuntimeError("vLLM returned no log-probs although they were requested")
            logprobs = [
                float(step[token].logprob) for step, token in zip(completion.logprobs, ids, strict=True)
            ]
        reason = completion.stop_reason
        finish: GenerationStop
        if completion.finish_reason == "length":
            finish, stop_string = "length", None
        elif isinstance(reason, str) and reason in request.stop:
            finish, stop_string = "stop", reason
        else:
            finish, stop_string = "eos", None
        return GenerationResult(
            text=completion.text,
            token_ids=ids,
            logprobs=logprobs,
            finish_reason=finish,
            stop_string=stop_string,
        )
