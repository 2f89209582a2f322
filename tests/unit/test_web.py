"""The web view's server side: what the page is given (links that went away drawn as
down), the files it may fetch, and the token as a cookie."""

from __future__ import annotations

import falcon.testing

from sdn.northbound.api import make_api
from sdn.northbound.web import View
from testing.fakes import connected_state


class Store:
    def history(self, limit: int) -> list:
        return []


class Engine:
    store = Store()


def test_a_link_that_goes_away_is_drawn_as_down():
    state = connected_state((1, 2, 3))
    view = View(state, Engine(), None)
    first = view.current()
    assert first["switches"] == ["s1", "s2", "s3"]
    assert sorted((lk["a"], lk["b"], lk["state"]) for lk in first["links"]) == [
        ("s1", "s2", "up"), ("s2", "s3", "up")]
    state.topology.port_down(2, 1)
    states = sorted(lk["state"] for lk in view.current()["links"])
    assert states == ["down", "up"]
    state.topology.add_link(2, 1, 3, 2)  # back (on other ports): no longer down
    assert "down" not in {lk["state"] for lk in view.current()["links"]}


def test_the_page_serves_its_files_only_and_takes_the_token_as_a_cookie():
    api = falcon.testing.TestClient(make_api(connected_state(), Engine(), token="t0ken"))
    assert api.simulate_get("/ui").status_code == 401
    login = api.simulate_get("/ui", params={"token": "t0ken"})
    assert login.status_code == 303 and login.cookies["sdn_token"].value == "t0ken"
    assert login.cookies["sdn_token"].http_only
    page = api.simulate_get("/ui", cookies={"sdn_token": "t0ken"})
    assert page.status_code == 200 and b"<title>" in page.content
    assert api.simulate_get("/ui/app.js", cookies={"sdn_token": "t0ken"}).status_code == 200
    assert api.simulate_get("/ui/..%2fapi.py", cookies={"sdn_token": "t0ken"}
                            ).status_code == 404
    assert api.simulate_get("/v1/view", cookies={"sdn_token": "wrong"}).status_code == 401
    assert api.simulate_get("/v1/view", params={"token": "t0ken"}).status_code == 401
