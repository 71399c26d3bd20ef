"""Pages: the tutor's room (logged-in users), the guest room (anyone), login and logout."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.urls import path

from daehwa.django.views import ChatRoomView

urlpatterns = [
    path(
        "",
        login_required(ChatRoomView.as_view(template_name="tutor/room.html", ws_path="/ws/tutor/", title="영어 튜터")),
        name="tutor",
    ),
    path(
        "guest/",
        ChatRoomView.as_view(template_name="tutor/room.html", ws_path="/ws/guest/", title="영어 튜터 (게스트)"),
        name="guest",
    ),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
]
