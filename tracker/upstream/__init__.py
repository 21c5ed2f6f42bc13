"""tracker/upstream"""
