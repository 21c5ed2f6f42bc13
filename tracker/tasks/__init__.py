"""tracker/tasks"""
