def test_round_trip_threads(app, run_worker):
    run_worker("--pool", "solo", "-c", "1")
    assert app.tasks["tests.apps.basic.add"].delay(2, 3).get(timeout=30) == 5
