"""List prices for the common hosted models, so costs work out of the box.

Figures are USD per million tokens, the providers' list prices for standard (non-batch)
requests, prompts under any long-context tier. Sources, read for this table in 2025:
  OpenAI     https://openai.com/api/pricing/
  Anthropic  https://www.anthropic.com/pricing#api (cache write = 5-minute cache)
  Google     https://ai.google.dev/gemini-api/docs/pricing (paid tier, prompts <= 200k)
  Mistral    https://mistral.ai/pricing#api-pricing
  Meta Llama https://www.together.ai/pricing (Meta sells no tokens itself; Together AI's
             serverless price stands in, and other hosts differ: add your own rows)
Prices change: edit them in the admin (add a row with a later "valid from" rather than
editing the old one, so older spans keep their price), then run
``msgtrace recompute_costs``. Rows this migration adds are marked with their source.
"""

from datetime import date
from decimal import Decimal

from django.db import migrations

OPENAI = "https://openai.com/api/pricing/"
ANTHROPIC = "https://www.anthropic.com/pricing#api"
GOOGLE = "https://ai.google.dev/gemini-api/docs/pricing"
MISTRAL = "https://mistral.ai/pricing#api-pricing"
TOGETHER = "https://www.together.ai/pricing"

# pattern, provider, valid from, input, output, cache read, cache write, reasoning, source.
# None: the model has no such price (cache falls back to input, reasoning to output).
PRICES = [
    # OpenAI. Reasoning tokens are billed as output tokens.
    ("gpt-5*", "openai", "2025-08-07", "1.25", "10", "0.125", None, None, OPENAI),
    ("gpt-5-mini*", "openai", "2025-08-07", "0.25", "2", "0.025", None, None, OPENAI),
    ("gpt-5-nano*", "openai", "2025-08-07", "0.05", "0.40", "0.005", None, None, OPENAI),
    ("gpt-4.1*", "openai", "2025-04-14", "2", "8", "0.50", None, None, OPENAI),
    ("gpt-4.1-mini*", "openai", "2025-04-14", "0.40", "1.60", "0.10", None, None, OPENAI),
    ("gpt-4.1-nano*", "openai", "2025-04-14", "0.10", "0.40", "0.025", None, None, OPENAI),
    # gpt-4o launched at $5/$15; the 2024-08-06 snapshot (and the alias) cost $2.50/$10.
    ("gpt-4o*", "openai", "2024-05-13", "5", "15", None, None, None, OPENAI),
    ("gpt-4o*", "openai", "2024-08-06", "2.50", "10", "1.25", None, None, OPENAI),
    ("gpt-4o-2024-05-13", "openai", "2024-05-13", "5", "15", None, None, None, OPENAI),
    ("gpt-4o-mini*", "openai", "2024-07-18", "0.15", "0.60", "0.075", None, None, OPENAI),
    ("o1*", "openai", "2024-12-17", "15", "60", "7.50", None, None, OPENAI),
    ("o1-mini*", "openai", "2024-09-12", "1.10", "4.40", "0.55", None, None, OPENAI),
    ("o3*", "openai", "2025-04-16", "10", "40", "2.50", None, None, OPENAI),
    ("o3*", "openai", "2025-06-10", "2", "8", "0.50", None, None, OPENAI),
    ("o3-mini*", "openai", "2025-01-31", "1.10", "4.40", "0.55", None, None, OPENAI),
    ("o4-mini*", "openai", "2025-04-16", "1.10", "4.40", "0.275", None, None, OPENAI),
    ("gpt-4-turbo*", "openai", "2024-04-09", "10", "30", None, None, None, OPENAI),
    ("gpt-4", "openai", "2023-03-14", "30", "60", None, None, None, OPENAI),
    ("gpt-4-0613", "openai", "2023-06-13", "30", "60", None, None, None, OPENAI),
    ("gpt-3.5-turbo*", "openai", "2024-01-25", "0.50", "1.50", None, None, None, OPENAI),
    ("text-embedding-3-small", "openai", "2024-01-25", "0.02", "0", None, None, None, OPENAI),
    ("text-embedding-3-large", "openai", "2024-01-25", "0.13", "0", None, None, None, OPENAI),
    ("text-embedding-ada-002", "openai", "2022-12-15", "0.10", "0", None, None, None, OPENAI),
    # Anthropic: cache reads cost 0.1x input, 5-minute cache writes 1.25x input.
    ("claude-opus-4-5*", "anthropic", "2025-11-24", "5", "25", "0.50", "6.25", None, ANTHROPIC),
    ("claude-opus-4*", "anthropic", "2025-05-22", "15", "75", "1.50", "18.75", None, ANTHROPIC),
    ("claude-sonnet-4*", "anthropic", "2025-05-22", "3", "15", "0.30", "3.75", None, ANTHROPIC),
    ("claude-haiku-4-5*", "anthropic", "2025-10-15", "1", "5", "0.10", "1.25", None, ANTHROPIC),
    ("claude-3-7-sonnet*", "anthropic", "2025-02-24", "3", "15", "0.30", "3.75", None, ANTHROPIC),
    ("claude-3-5-sonnet*", "anthropic", "2024-06-20", "3", "15", "0.30", "3.75", None, ANTHROPIC),
    ("claude-3-5-haiku*", "anthropic", "2024-11-04", "0.80", "4", "0.08", "1", None, ANTHROPIC),
    ("claude-3-opus*", "anthropic", "2024-03-04", "15", "75", "1.50", "18.75", None, ANTHROPIC),
    ("claude-3-haiku*", "anthropic", "2024-03-13", "0.25", "1.25", "0.03", "0.30", None, ANTHROPIC),
    # Google Gemini API, paid tier.
    ("gemini-2.5-pro*", "google", "2025-06-17", "1.25", "10", "0.31", None, None, GOOGLE),
    ("gemini-2.5-flash*", "google", "2025-06-17", "0.30", "2.50", "0.075", None, None, GOOGLE),
    ("gemini-2.5-flash-lite*", "google", "2025-07-22", "0.10", "0.40", "0.025", None, None, GOOGLE),
    ("gemini-2.0-flash*", "google", "2025-02-05", "0.10", "0.40", "0.025", None, None, GOOGLE),
    ("gemini-2.0-flash-lite*", "google", "2025-02-25", "0.075", "0.30", None, None, None, GOOGLE),
    ("gemini-1.5-pro*", "google", "2024-10-01", "1.25", "5", "0.3125", None, None, GOOGLE),
    ("gemini-1.5-flash*", "google", "2024-08-12", "0.075", "0.30", "0.01875", None, None, GOOGLE),
    # Mistral.
    ("mistral-large*", "mistral", "2024-11-18", "2", "6", None, None, None, MISTRAL),
    ("mistral-medium*", "mistral", "2025-05-07", "0.40", "2", None, None, None, MISTRAL),
    ("mistral-small*", "mistral", "2025-03-17", "0.10", "0.30", None, None, None, MISTRAL),
    ("codestral*", "mistral", "2025-01-13", "0.30", "0.90", None, None, None, MISTRAL),
    ("pixtral-large*", "mistral", "2024-11-18", "2", "6", None, None, None, MISTRAL),
    ("open-mistral-nemo*", "mistral", "2024-07-18", "0.15", "0.15", None, None, None, MISTRAL),
    ("ministral-8b*", "mistral", "2024-10-16", "0.10", "0.10", None, None, None, MISTRAL),
    ("ministral-3b*", "mistral", "2024-10-16", "0.04", "0.04", None, None, None, MISTRAL),
    # Meta Llama (Together AI's serverless prices; see above).
    ("llama-4-maverick*", "meta", "2025-04-05", "0.27", "0.85", None, None, None, TOGETHER),
    ("llama-4-scout*", "meta", "2025-04-05", "0.18", "0.59", None, None, None, TOGETHER),
    ("llama-3.3-70b*", "meta", "2024-12-06", "0.88", "0.88", None, None, None, TOGETHER),
    ("llama-3.1-405b*", "meta", "2024-07-23", "3.50", "3.50", None, None, None, TOGETHER),
    ("llama-3.1-70b*", "meta", "2024-07-23", "0.88", "0.88", None, None, None, TOGETHER),
    ("llama-3.1-8b*", "meta", "2024-07-23", "0.18", "0.18", None, None, None, TOGETHER),
]


def _amount(value):
    return None if value is None else Decimal(value)


def add_prices(apps, schema_editor):
    ModelPrice = apps.get_model("traces", "ModelPrice")
    ModelPrice.objects.bulk_create(
        [
            ModelPrice(
                pattern=pattern,
                provider=provider,
                valid_from=date.fromisoformat(valid_from),
                input_per_million=Decimal(price_in),
                output_per_million=Decimal(price_out),
                cache_read_per_million=_amount(cache_read),
                cache_write_per_million=_amount(cache_write),
                reasoning_per_million=_amount(reasoning),
                currency="USD",
                source=source,
            )
            for (
                pattern,
                provider,
                valid_from,
                price_in,
                price_out,
                cache_read,
                cache_write,
                reasoning,
                source,
            ) in PRICES
        ],  # fmt: skip
        ignore_conflicts=True,
    )


def remove_prices(apps, schema_editor):
    ModelPrice = apps.get_model("traces", "ModelPrice")
    sources = {row[-1] for row in PRICES}
    ModelPrice.objects.filter(source__in=sources).delete()


class Migration(migrations.Migration):
    dependencies = [("traces", "0003_cost_sources")]

    operations = [migrations.RunPython(add_prices, remove_prices)]
