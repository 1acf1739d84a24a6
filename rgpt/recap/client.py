"""An async client for OpenAI-compatible chat completions (vLLM, hosted GPT-4-class APIs, the stand-in).

One `ChatClient` holds one aiohttp session and enforces, over every request made through it:
- a concurrency limit (a semaphore: at most `concurrency` requests in flight),
- request-per-minute and token-per-minute limits (token buckets; a request's tokens are
  estimated before it is sent and corrected from the response's `usage` after),
- retries on 429, 5xx, timeouts and connection errors with exponential backoff and full jitter
  (sleep uniform(0, min(cap, base * 2^attempt))), or the server's Retry-After when it sends one,
- a persistent response cache (`ResponseCache`): a request whose key is there is not sent.

The API key is read from the environment variable *named* by the config, at session start, and
only ever goes into the Authorization header: it is never logged, returned or written anywhere.
No variable, or an empty one: no Authorization header (fine for a local vLLM).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from .cache import ResponseCache

log = logging.getLogger(__name__)

RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}
IMAGE_TOKENS = 576  # what one image costs a LLaVA-1.5 prompt (24 x 24 patches): the estimate before the call


@dataclass(frozen=True)
class ClientConfig:
    base_url: str  # e.g. http://localhost:8000/v1; requests go to <base_url>/chat/completions
    model: str
    api_key_env: str | None = None  # the NAME of the variable that holds the key
    concurrency: int = 8
    requests_per_minute: float | None = None  # None: no limit
    tokens_per_minute: float | None = None
    max_retries: int = 5
    timeout_s: float = 30.0
    max_tokens: int = 256
    temperature: float = 0.2
    backoff_base_s: float = 0.25
    backoff_max_s: float = 30.0


@dataclass
class Counters:
    """What a client did; `+` merges the counters of several clients (shards)."""

    api_calls: int = 0  # HTTP requests sent, retries included
    retries: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    failures: Counter = field(default_factory=Counter)  # reason -> requests given up on
    rate_limit_wait_s: float = 0.0  # time spent waiting on the rpm/tpm buckets

    def __add__(self, other: Counters) -> Counters:
        return Counters(self.api_calls + other.api_calls, self.retries + other.retries,
                        self.cache_hits + other.cache_hits, self.prompt_tokens + other.prompt_tokens,
                        self.completion_tokens + other.completion_tokens, self.failures + other.failures,
                        self.rate_limit_wait_s + other.rate_limit_wait_s)

    def to_dict(self) -> dict[str, Any]:
        return {"api_calls": self.api_calls, "retries": self.retries, "cache_hits": self.cache_hits,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "failures": dict(sorted(self.failures.items())), "rate_limit_wait_s": round(self.rate_limit_wait_s, 3)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Counters:
        return cls(d["api_calls"], d["retries"], d["cache_hits"], d["prompt_tokens"], d["completion_tokens"],
                   Counter(d["failures"]), d.get("rate_limit_wait_s", 0.0))


@dataclass(frozen=True)
class Completion:
    text: str
    usage: dict[str, int]
    cached: bool
    finish_reason: str | None = None


class RequestFailed(Exception):
    """A request given up on: `reason` is a short key for counting (http_429, http_500, timeout, ...)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class _Retryable(Exception):
    def __init__(self, reason: str, detail: str, retry_after: float | None = None):
        super().__init__(detail)
        self.reason, self.detail, self.retry_after = reason, detail, retry_after


class TokenBucket:
    """`rate` units per second, bursts up to `capacity`; a debt (negative level) delays later callers."""

    def __init__(self, rate: float, capacity: float):
        self.rate, self.capacity = rate, capacity
        self.level = capacity
        self.stamp = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    async def acquire(self, amount: float) -> float:
        """Take `amount` (at most the capacity), waiting until it is there; returns the seconds waited."""
        amount = min(amount, self.capacity)
        waited = 0.0
        async with self._lock:  # first come, first served
            while True:
                self._refill()
                if self.level >= amount:
                    self.level -= amount
                    return waited
                pause = (amount - self.level) / self.rate
                waited += pause
                await asyncio.sleep(pause)

    def adjust(self, delta: float) -> None:
        """Charge `delta` more units (negative: give some back) once the true cost is known."""
        self._refill()
        self.level = min(self.capacity, self.level - delta)


def per_minute_bucket(per_minute: float | None) -> TokenBucket | None:
    # capacity: one second's worth, so a fresh client cannot fire a whole minute's budget at once
    return None if per_minute is None else TokenBucket(per_minute / 60.0, max(1.0, per_minute / 60.0))


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header in seconds (a number, or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def estimate_tokens(messages: list[dict[str, Any]], max_tokens: int) -> int:
    """Tokens a request may cost before its `usage` is known: ~4 characters a text token, a fixed
    cost per image, and the whole completion budget."""
    text, images = 0, 0
    for message in messages:
        content = message["content"]
        for part in [content] if isinstance(content, str) else content:
            if isinstance(part, str):
                text += len(part)
            elif part.get("type") == "text":
                text += len(part["text"])
            elif part.get("type") == "image_url":
                images += 1
    return text // 4 + images * IMAGE_TOKENS + max_tokens


class ChatClient:
    """`async with ChatClient(config, cache) as client: completion = await client.complete(messages, key)`."""

    def __init__(self, config: ClientConfig, cache: ResponseCache | None = None):
        self.config = config
        self.cache = cache
        self.counters = Counters()
        self._semaphore = asyncio.Semaphore(config.concurrency)
        self._requests = per_minute_bucket(config.requests_per_minute)
        self._tokens = per_minute_bucket(config.tokens_per_minute)
        self._jitter = random.Random()  # timing only: nothing generated depends on it
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ChatClient:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.config.api_key_env or "", "").strip() if self.config.api_key_env else ""
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._session = aiohttp.ClientSession(
            headers=headers, timeout=aiohttp.ClientTimeout(total=self.config.timeout_s),
            connector=aiohttp.TCPConnector(limit=self.config.concurrency, limit_per_host=self.config.concurrency))
        return self

    async def __aexit__(self, *exc) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def complete(self, messages: list[dict[str, Any]], cache_key: str | None = None,
                       seed: int | None = None) -> Completion:
        """The assistant's answer to `messages`, from the cache when `cache_key` is there.

        Raises RequestFailed once retries are exhausted or on an error that retrying cannot fix.
        """
        if self.cache is not None and cache_key is not None:
            body = self.cache.get(cache_key)
            if body is not None:
                self.counters.cache_hits += 1
                return _completion(body, cached=True)
        payload = {"model": self.config.model, "messages": messages, "max_tokens": self.config.max_tokens,
                   "temperature": self.config.temperature}
        if seed is not None:
            payload["seed"] = seed  # vLLM and OpenAI accept it: the same request gives the same answer
        estimate = estimate_tokens(messages, self.config.max_tokens)
        async with self._semaphore:
            body = await self._post_with_retries(payload, estimate)
        completion = _completion(body, cached=False)
        if self.cache is not None and cache_key is not None:
            self.cache.put(cache_key, body)
        return completion

    async def _post_with_retries(self, payload: dict[str, Any], estimate: int) -> dict[str, Any]:
        for attempt in range(self.config.max_retries + 1):
            await self._wait_for_budget(estimate)
            try:
                body = await self._post(payload)
            except _Retryable as e:
                self._charge(estimate, 0)  # a refused request used no tokens
                if attempt == self.config.max_retries:
                    self.counters.failures[e.reason] += 1
                    raise RequestFailed(e.reason, f"gave up after {attempt + 1} attempts; last: {e.detail}") from None
                self.counters.retries += 1
                await asyncio.sleep(self._backoff(attempt, e.retry_after))
                continue
            except RequestFailed as e:
                self._charge(estimate, 0)
                self.counters.failures[e.reason] += 1
                raise
            usage = body.get("usage") or {}
            self.counters.prompt_tokens += int(usage.get("prompt_tokens", 0))
            self.counters.completion_tokens += int(usage.get("completion_tokens", 0))
            self._charge(estimate, int(usage.get("total_tokens", estimate)))
            return body
        raise AssertionError("unreachable")

    async def _wait_for_budget(self, estimate: int) -> None:
        for bucket, amount in ((self._requests, 1), (self._tokens, estimate)):
            if bucket is not None:
                self.counters.rate_limit_wait_s += await bucket.acquire(amount)

    def _charge(self, estimate: int, actual: int) -> None:
        if self._tokens is not None:
            self._tokens.adjust(actual - min(estimate, self._tokens.capacity))

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Full jitter (AWS architecture blog): uniform(0, min(cap, base * 2^attempt)); at least Retry-After."""
        jittered = self._jitter.uniform(0, min(self.config.backoff_max_s, self.config.backoff_base_s * 2 ** attempt))
        return max(jittered, min(retry_after, self.config.backoff_max_s)) if retry_after is not None else jittered

    async def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        if self._session is None:
            raise RuntimeError("ChatClient used outside `async with`")
        url = f"{self.config.base_url}/chat/completions"
        self.counters.api_calls += 1
        try:
            async with self._session.post(url, data=json.dumps(payload)) as response:
                text = await response.text()
                if response.status in RETRYABLE_STATUS:
                    raise _Retryable(f"http_{response.status}", f"{url} answered {response.status}: {text[:200]}",
                                     retry_after_seconds(response.headers.get("Retry-After")))
                if response.status >= 400:
                    raise RequestFailed(f"http_{response.status}", f"{url} answered {response.status}: {text[:300]}")
        except asyncio.TimeoutError:
            raise _Retryable("timeout", f"no answer from {url} within {self.config.timeout_s} s") from None
        except aiohttp.ClientConnectionError as e:  # refused, reset, server disconnected
            raise _Retryable("connection", f"{url}: {type(e).__name__}: {e}") from None
        except aiohttp.ClientPayloadError as e:
            raise _Retryable("connection", f"{url}: truncated answer ({e})") from None
        try:
            body = json.loads(text)
            body["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise RequestFailed("bad_response", f"{url} answered 200 without choices[0].message.content: "
                                                f"{text[:200]}") from None
        return body


def _completion(body: dict[str, Any], cached: bool) -> Completion:
    choice = body["choices"][0]
    return Completion(choice["message"]["content"] or "", body.get("usage") or {}, cached, choice.get("finish_reason"))


def user_message(text: str, image_url: str) -> list[dict[str, Any]]:
    """One user turn holding an image (a data URL) and a text, in the OpenAI vision format."""
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_url}},
                                         {"type": "text", "text": text}]}]
