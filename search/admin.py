from django.contrib import admin

from search.models import SavedFilter, SearchHistory


@admin.register(SavedFilter)
class SavedFilterAdmin(admin.ModelAdmin):
    list_display = ("name", "query", "updated")
    search_fields = ("name", "query")


@admin.register(SearchHistory)
class SearchHistoryAdmin(admin.ModelAdmin):
    list_display = ("query", "last_used")
    search_fields = ("query",)
