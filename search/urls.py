from django.urls import path

from search import views

app_name = "search"

urlpatterns = [
    path("saved", views.saved_filter_create, name="saved_create"),
    path("saved/<int:pk>/rename", views.saved_filter_rename, name="saved_rename"),
    path("saved/<int:pk>/delete", views.saved_filter_delete, name="saved_delete"),
    path("history/clear", views.history_clear, name="history_clear"),
]
