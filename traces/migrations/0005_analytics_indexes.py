"""Covering indexes for the analytics page (traces/analytics.py).

``span_analytics`` replaces ``span_model``, a plain index on the model that no query used.
On a 1,000,000-span database, building them takes ~15 s.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("traces", "0004_model_prices")]

    operations = [
        migrations.RemoveIndex(model_name="span", name="span_model"),
        migrations.AddIndex(
            model_name="span",
            index=models.Index(
                fields=[
                    "name",
                    "model",
                    "span_type",
                    "duration_ns",
                    "start_ns",
                    "is_error",
                    "cost_source",
                    "trace",
                    "input_tokens",
                    "output_tokens",
                    "cost",
                ],
                name="span_analytics",
            ),
        ),
        migrations.AddIndex(
            model_name="trace",
            index=models.Index(
                fields=[
                    "start_ns",
                    "duration_ns",
                    "error_count",
                    "input_tokens",
                    "output_tokens",
                    "cost",
                    "unpriced_count",
                    "service_name",
                    "workflow_name",
                    "span_count",
                ],
                name="trace_analytics",
            ),
        ),
    ]
