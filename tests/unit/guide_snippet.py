# The "Analyzing Exported Data" function of ../shared/reference/mqtt-diagnostics-guide.txt, kept unchanged so a test
# can prove that our export still feeds it. Do not edit the body: the point is that it is the guide's.
# ruff: noqa
# mypy: ignore-errors
import json

def analyze_diagnostics(json_file: str) -> None:
    """Analyze exported diagnostics."""

    with open(json_file) as f:
        data = json.load(f)

    metrics = data['metrics']
    recent_drops = data['recent_drops']

    print(f"Total Drops: {metrics['total_connection_drops']}")
    print(f"Successful Reconnections: {metrics['connection_recovered']}")
    print(f"Current Uptime: {metrics['current_session_uptime_seconds']:.0f}s")

    # Analyze drop patterns
    if recent_drops:
        print("\nRecent Drops:")
        for drop in recent_drops[-5:]:
            print(
                f"  {drop['timestamp']}: "
                f"{drop['error_name']} "
                f"(duration: {drop['duration_connected_seconds']:.0f}s)"
            )

    # Check error distribution
    if data['aws_error_counts']:
        print("\nError Frequency:")
        for error, count in data['aws_error_counts'].items():
            print(f"  {error}: {count}")
